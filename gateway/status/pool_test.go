package status

import (
	"bytes"
	"strings"
	"testing"
)

// TestTablePoolBothFamilies: `gateway status` prints the IPv4 pool and,
// with pool.ipv6_prefix, the IPv6 /64 pool on one line.
func TestTablePoolBothFamilies(t *testing.T) {
	r := sample()
	r.Pool = &Pool{Prefix: "10.10.0.0/24", InUse: 3, Free: 250, IPv6Prefix: "2001:db8:100::/48", IPv6InUse: 2, IPv6Max: 65536, IPv6Exhausted: 1}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	if want := "pool: 10.10.0.0/24 3 in use, 250 free; ipv6 2001:db8:100::/48 2 /64s in use (max 65536), 1 sessions without one"; !strings.Contains(b.String(), want) {
		t.Fatalf("table lacks %q:\n%s", want, b.String())
	}
}
