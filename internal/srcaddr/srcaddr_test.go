package srcaddr

import (
	"net/netip"
	"testing"
)

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                     "192.0.2.7",
		"::ffff:192.0.2.7":              "192.0.2.7",
		"2001:db8:1:2:aaaa:bbbb:cccc:1": "2001:db8:1:2::",
		"2001:db8:1:2::ffff":            "2001:db8:1:2::",
		"fe80::1%eth0":                  "fe80::",
	} {
		if got := Key(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
}
