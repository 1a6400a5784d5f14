package config

import (
	"bytes"
	"errors"
	"net/netip"
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
	if ap, err := netip.ParseAddrPort(c.Listen); err != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("shipped http_listen %q: /status and /metrics must listen on loopback", c.Listen)
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
		// status page: actions without a credential, half a TLS pair,
		// client CA without HTTPS, silly intervals
		"prefix: 10.10.8.0/24\nstatus_page: {actions: true}\n",
		"prefix: 10.10.8.0/24\nstatus_page: {tls_cert: c.pem}\n",
		"prefix: 10.10.8.0/24\nstatus_page: {client_ca: ca.pem}\n",
		"prefix: 10.10.8.0/24\nstatus_page: {quiet_after: 10ms}\n",
		"prefix: 10.10.8.0/24\nstatus_page: {sample_interval: 1ms}\n",
		// certificate mode without a CA or a gateway ID would take any
		// certificate as the gateway
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, gateway_id: gw1, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, ca: a, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], psk: p, crl: x, ppp_user: u}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], psk: p, ppp_user: u, ppp_methods: [eap]}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], psk: p, ppp_user: u, crl_url: \"http://10.200.0.2/c\"}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, ca: a, gateway_id: gw, ppp_user: u, crl_url: \"https://crl.example/c\"}\n",
		"prefix: 10.10.8.0/24\nuplink: {mode: l2tp-ipsec, gateways: [g], cert: c, key: k, ca: a, gateway_id: gw, ppp_user: u, crl_url: \"http://10.200.0.2/c\", crl_refresh: 1s}\n",
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
		{base + "bogus: 1\n", ":3: unknown key \"bogus\" (valid keys: bridge_address,"},
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

// TestSecretFiles: uplink.psk_file and ppp_password_file are read
// (relative to the config file) only if owner-only; inline secrets need an
// owner-only config file; the refusals name file, line, key and the fix.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "prefix: 10.10.8.0/24\nuplink:\n  mode: l2tp-ipsec\n  gateways: [192.0.2.1]\n  ppp_user: u\n"
	write("site.psk", "file-psk\n", 0o600)
	write("site.ppp", "file-ppp\n", 0o600)
	c, err := Load(write("ok.yaml", base+"  psk_file: site.psk\n  ppp_password_file: site.ppp\n", 0o644))
	if err != nil || c.Uplink.PSK != "file-psk" || c.Uplink.PPPPassword != "file-ppp" {
		t.Fatalf("owner-only secret files: %+v, %v", c, err)
	}
	if _, err := Load(write("inline-ok.yaml", base+"  psk: inline\n  ppp_password: pw\n", 0o600)); err != nil {
		t.Fatalf("inline secrets in an owner-only config: %v", err)
	}
	write("open.psk", "open-psk\n", 0o644)
	for _, tt := range []struct{ name, body, want string }{
		{"open-psk.yaml", base + "  psk_file: open.psk\n", "open-psk.yaml:6: uplink.psk_file: " + filepath.Join(dir, "open.psk") + " holds secrets but is accessible by group or others (mode 0644): run chmod 600"},
		{"inline.yaml", base + "  psk: inline\n", "inline.yaml:6: uplink.psk: inline secret: move it to uplink.psk_file, or: " + filepath.Join(dir, "inline.yaml") + " holds secrets"},
		{"inline-ppp.yaml", base + "  psk_file: site.psk\n  ppp_password: pw\n", "uplink.ppp_password: inline secret"},
		{"both.yaml", base + "  psk: a\n  psk_file: site.psk\n", "psk and psk_file are exclusive"},
		{"site.yaml", "site: a/b\n" + base + "  psk_file: site.psk\n", "site must be"},
	} {
		_, err := Load(write(tt.name, tt.body, 0o644))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}
