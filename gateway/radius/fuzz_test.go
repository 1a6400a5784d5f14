package radius

import "testing"

func FuzzParseFramedRoute(f *testing.F) {
	for _, s := range []string{"10.10.8.0/24 0.0.0.0 1", "10.10.9.0 255.255.255.0 1", "10.10.9.7", "", "2001:db8::/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseFramedRoute(s)
		if err != nil {
			return
		}
		if !p.Addr().Is4() || p.Masked() != p {
			t.Fatalf("ParseFramedRoute(%q) = %v: not a masked IPv4 prefix", s, p)
		}
	})
}
