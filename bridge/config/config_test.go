package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReferenceConfigParses(t *testing.T) {
	b, err := os.ReadFile("../../configs/bridge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Its uplink section is complete: it validates as l2tp-ipsec too.
	if _, err := Parse(bytes.Replace(b, []byte("mode: none"), []byte("mode: l2tp-ipsec"), 1)); err != nil {
		t.Fatalf("reference config as l2tp-ipsec: %v", err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Prefix.String(), "10.10.8.0/24"; got != want {
		t.Fatalf("got prefix %s, want %s", got, want)
	}
	if got, want := c.Downlink.QueueTTL.String(), "1m0s"; got != want {
		t.Fatalf("got queue_ttl %s, want %s", got, want)
	}
	if c.MQTT.CentralInflight != 20 {
		t.Fatalf("got mqtt.central_inflight %d, want 20", c.MQTT.CentralInflight)
	}
	if c.Hosts["tsdb"].String() != "10.20.0.5" {
		t.Fatalf("got hosts %v, want tsdb=10.20.0.5", c.Hosts)
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"prefix: 10.10.8.0/24\nunknown_key: 1\n",
		"prefix: fd00::/64\n",
		"prefix: 10.10.8.0/31\n",
		"prefix: 10.10.8.0/24\nbridge_address: 10.10.9.1\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: pptp}\n",
		"prefix: 10.10.8.0/24\nmqtt: {central_inflight: -1}\n",
		// certificate mode without a CA or a gateway ID would take any
		// certificate as the gateway
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, gateway_id: gw1, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, ca: a, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], psk: p, crl: x, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], psk: p, ppp_user: u, ppp_methods: [eap]}\n",
		"{",
	} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): got %v, want ErrInvalid", in, err)
		}
	}
}

// FuzzParse: bad YAML never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte("prefix: 10.10.8.0/24\ncentral_coap: 10.20.0.1:5683\n"))
	f.Add([]byte("prefix: 10.10.8.0/24\nhosts: {a: 1.2.3.4}\ndownlink: {queue_ttl: 5s}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && !c.Prefix.Addr().Is4() {
			t.Fatalf("accepted non-IPv4 prefix %v", c.Prefix)
		}
	})
}

func TestLoadErrorLines(t *testing.T) {
	base := "site: s\nprefix: 10.10.8.0/24\n"
	for _, tc := range []struct{ in, want string }{
		{base + "bogus: 1\n", ":3: field bogus not found"},
		{base + "bridge_address: 10.10.9.1\n", ":3: bridge_address outside prefix"},
		{base + "uplink:\n  mode: pptp\n", ":4: uplink.mode must be none or l2tp-ipsec"},
		{base + "uplink:\n  mode: l2tp-ipsec\n  gateways: [192.0.2.1]\n  psk: x\n", ":3: uplink.ppp_user is empty"},
		{base + "downlink:\n  queue_ttl: soon\n", ":4: cannot unmarshal"},
		{"site: s\nprefix: 10.10.8.0/33\n", ":2: "},
		{base + "uplink:\n  mode: l2tp-ipsec\n  gateways: [192.0.2.1]\n  psk: x\n  ppp_user: u\n  esp_proposals: aes128gcm16,rot13-md5\n", ":8: uplink.esp_proposals"},
	} {
		p := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(p, []byte(tc.in), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), p+tc.want[:strings.Index(tc.want[1:], ":")+2]) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q): got %v, want %s%s… (ErrInvalid)", tc.in, err, p, tc.want)
		}
	}
}
