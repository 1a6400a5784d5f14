package registry

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIPv6Addr(t *testing.T) {
	p4 := netip.MustParsePrefix("10.10.8.0/24")
	p6 := netip.MustParsePrefix("2001:db8:8::/64")
	for _, c := range []struct {
		p4   netip.Prefix
		a    string
		want string
	}{
		{p4, "10.10.8.17", "2001:db8:8::17"},
		{p4, "10.10.8.1", "2001:db8:8::1"},
		{p4, "10.10.8.254", "2001:db8:8::254"},
		{netip.MustParsePrefix("10.10.0.0/16"), "10.10.1.5", "2001:db8:8::261"},
		{netip.MustParsePrefix("10.0.0.0/8"), "10.255.255.254", "2001:db8:8::1677:7214"},
		{p4, "10.10.9.17", ""}, // outside the IPv4 prefix
	} {
		got := IPv6Addr(c.p4, p6, netip.MustParseAddr(c.a))
		if (c.want == "" && got.IsValid()) || (c.want != "" && got != netip.MustParseAddr(c.want)) {
			t.Errorf("IPv6Addr(%s, %s) = %s, want %q", c.p4, c.a, got, c.want)
		}
	}
	if got := IPv6Addr(p4, netip.Prefix{}, netip.MustParseAddr("10.10.8.17")); got.IsValid() {
		t.Errorf("no IPv6 prefix: got %s, want none", got)
	}
	for _, bad := range []string{"10.0.0.0/8", "2001:db8:8::/96", "::ffff:10.0.0.0/104"} {
		if CheckPrefix6(netip.MustParsePrefix(bad)) == nil {
			t.Errorf("CheckPrefix6(%s): got nil, want an error", bad)
		}
	}
}

// The registry gives every endpoint its derived IPv6 address, finds it by
// that address, and never writes it to the state file.
func TestRegistryIPv6Prefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.json")
	r, err := Open(path, netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(Endpoint{Name: "sensor-17", Protocol: CoAP, PSKIdentity: "s17", PSK: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetIPv6Prefix(netip.MustParsePrefix("2001:db8:8::/64")); err != nil {
		t.Fatal(err)
	}
	e2, err := r.Add(Endpoint{Name: "sensor-18", Protocol: MQTT, PSKIdentity: "s18", PSK: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("2001:db8:8::18"); e2.Addr6 != want {
		t.Fatalf("added after the prefix: got %s, want %s", e2.Addr6, want)
	}
	e, ok := r.ByAddr(netip.MustParseAddr("2001:db8:8::17"))
	if !ok || e.Name != "sensor-17" || e.Addr != netip.MustParseAddr("10.10.8.17") {
		t.Fatalf("ByAddr(v6) = %+v, %v; want sensor-17", e, ok)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "2001:db8") {
		t.Fatalf("state file holds the derived IPv6 address: %s", b)
	}
	if err := r.Remove("sensor-17"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.ByAddr(netip.MustParseAddr("2001:db8:8::17")); ok {
		t.Fatal("removed endpoint still found by its IPv6 address")
	}
	if err := r.SetIPv6Prefix(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	if e, _ := r.ByName("sensor-18"); e.Addr6.IsValid() {
		t.Fatalf("prefix removed: sensor-18 still has %s", e.Addr6)
	}
}
