package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ipv6_prefix: an IPv6 /64 (or shorter) parses; anything else is refused
// naming file, line and key with the fix.
func TestIPv6Prefix(t *testing.T) {
	base := "site: s\nprefix: 10.10.8.0/24\n"
	load := func(in string) (*Config, error) {
		p := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(p, []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	c, err := load(base + "ipv6_prefix: 2001:db8:8::/64\n")
	if err != nil || c.IPv6Prefix != netip.MustParsePrefix("2001:db8:8::/64") {
		t.Fatalf("got %v, %v; want 2001:db8:8::/64", c, err)
	}
	for _, bad := range []string{"10.10.9.0/24", "2001:db8:8::/96"} {
		_, err := load(base + "ipv6_prefix: " + bad + "\n")
		if err == nil || !strings.Contains(err.Error(), ":3: ipv6_prefix must be an IPv6 prefix of /64 or shorter") {
			t.Errorf("ipv6_prefix %s: got %v, want a :3: ipv6_prefix error", bad, err)
		}
	}
}
