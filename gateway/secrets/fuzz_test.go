package secrets

import (
	"strings"
	"testing"
)

func FuzzParseIPsecSecrets(f *testing.F) {
	f.Add([]byte(": PSK \"shared secret\"\n203.0.113.7 site-a : PSK 0x7365\n@b : PSK 0sc2Vj\n: RSA k.pem\n"))
	f.Add([]byte("multi\n  line : PSK 'x'\ninclude /etc/x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, _, err := ParseIPsecSecrets(b)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Line < 1 || e.Type == "" {
				t.Fatalf("entry %+v without line or type", e)
			}
		}
	})
}

func FuzzParseCHAPSecrets(f *testing.F) {
	f.Add([]byte("alice * \"a b\" 10.10.0.50\nbob l2tpd bobpw *\n"))
	f.Add([]byte("# c\n'x y' * z 10.0.0.1/32\n"))
	f.Add([]byte("a * sekrit 10.0.0.300\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseCHAPSecrets(b)
		if err != nil {
			// The secret is the third field; errors name only the line
			// and, for addresses, the address token.
			if f, ok := splitFields(strings.SplitN(string(b), "\n", 2)[0]); ok && len(f) >= 3 && len(f[2]) > 3 &&
				!strings.Contains(strings.Join(append(f[:2:2], f[3:]...), " "), f[2]) && strings.Contains(err.Error(), f[2]) {
				t.Fatalf("secret leaked into error %q", err)
			}
			return
		}
		for _, e := range entries {
			if e.Line < 1 || e.Client == "" {
				t.Fatalf("entry %+v without line or client", e)
			}
		}
	})
}
