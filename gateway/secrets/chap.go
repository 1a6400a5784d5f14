package secrets

import (
	"net/netip"
	"strings"
)

// CHAPSecret is one line of a pppd chap-secrets (or pap-secrets) file:
// "client server secret [acceptable local IP addresses...]".
type CHAPSecret struct {
	Client string // user name, "*" = any
	Server string // server name, "*" = any
	Secret string // password (never logged)
	// Addrs are the addresses the client may use; a single address is the
	// static address given to it. "*" and "-" entries are dropped.
	Addrs []netip.Addr
	Line  int
}

// ParseCHAPSecrets parses a chap-secrets file. Lines with fewer than three
// fields are errors; "@file" secrets (read from another file) are refused.
func ParseCHAPSecrets(b []byte) ([]CHAPSecret, error) {
	var out []CHAPSecret
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		f, ok := splitFields(line)
		if !ok {
			return nil, &ParseError{Line: n, Msg: "unterminated quote"}
		}
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, &ParseError{Line: n, Msg: "want: client server secret [addresses]"}
		}
		if f[0] == "" {
			return nil, &ParseError{Line: n, Msg: "empty client name"}
		}
		if strings.HasPrefix(f[2], "@") {
			return nil, &ParseError{Line: n, Msg: "secrets read from files (@file) are not supported"}
		}
		s := CHAPSecret{Client: f[0], Server: f[1], Secret: f[2], Line: n}
		for _, a := range f[3:] {
			if a == "*" || a == "-" || a == "" {
				continue
			}
			a = strings.TrimPrefix(a, "!")
			if p, err := netip.ParsePrefix(a); err == nil && p.Bits() == p.Addr().BitLen() {
				s.Addrs = append(s.Addrs, p.Addr())
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return nil, &ParseError{Line: n, Msg: "bad address " + quoteShort(a)}
			}
			s.Addrs = append(s.Addrs, ip)
		}
		out = append(out, s)
	}
	return out, nil
}

// quoteShort quotes a non-secret token for an error message, truncated.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return `"` + s + `"`
}
