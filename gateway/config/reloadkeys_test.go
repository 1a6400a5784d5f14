package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestReloadKeysClassified: every top-level key has a reload class, and a
// restart-only key changed by a reload is reported in RestartNeeded (the
// reload's log line), including the ones fixed when the IKE engine starts.
func TestReloadKeysClassified(t *testing.T) {
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		tag := strings.Split(ct.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		if _, ok := ReloadKeys[tag]; !ok {
			t.Errorf("key %q has no reload class in ReloadKeys: say whether a reload applies it", tag)
		}
	}
	base := "psk: {shared: x}\n"
	old, err := Parse("f.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"gateway_id: vpn.example.net\n", "gateway_id"},
		{"pki: {cert: gw.crt, key: gw.key}\n", "pki.cert/pki.key"},
		{"listen: {ike_port: 1500, natt_port: 14500}\n", "listen"},
		{"dpd: {interval: 10s}\n", "dpd"},
	} {
		next, err := Parse("f.yaml", []byte(base+tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if ch := Diff(old, next); !slices.Contains(ch.RestartNeeded, tt.want) {
			t.Errorf("%q: RestartNeeded %v, want %q in it", tt.yaml, ch.RestartNeeded, tt.want)
		}
	}
	// bgp.next_hop6 is fixed when the speaker starts (H26's note: a reload
	// kept the old one without saying so).
	bgpBase := base + "bgp: {local_as: 1, router_id: 192.0.2.1, neighbors: [{address: 192.0.2.2, as: 2}]}\n"
	if old, err = Parse("f.yaml", []byte(bgpBase)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"bgp: {local_as: 1, router_id: 192.0.2.1, next_hop6: 2001:db8:200::1, neighbors: [{address: 192.0.2.2, as: 2}]}\n",
			"bgp (on/off, local_as, router_id, local_address, next_hop6)"},
	} {
		next, err := Parse("f.yaml", []byte(base+tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if ch := Diff(old, next); !slices.Contains(ch.RestartNeeded, tt.want) {
			t.Errorf("%q: RestartNeeded %v, want %q in it", tt.yaml, ch.RestartNeeded, tt.want)
		}
	}
	if old, err = Parse("f.yaml", []byte(base)); err != nil {
		t.Fatal(err)
	}
	// Applied keys are not reported as restart-only.
	next, _ := Parse("f.yaml", []byte(base+"mtu: 1300\ndebug: {keylog_dir: /tmp/kl}\nproposals: {ike: [aes256-sha256-ecp256]}\n"))
	if ch := Diff(old, next); len(ch.RestartNeeded) != 0 || !slices.Contains(ch.AllSessions, "mtu") || !slices.Contains(ch.AllSessions, "proposals") {
		t.Errorf("applied keys: %+v", ch)
	}
}
