package secrets

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestParseIPsecSecrets(t *testing.T) {
	in := `# /etc/ipsec.secrets - strongSwan IPsec secrets file
: PSK "shared secret"
203.0.113.7 site-a.example : PSK 0x736563726574
@site-b  : PSK 0sc2VjcmV0
carol : XAUTH "x pw"
: RSA gateway.key
fe80::1 : PSK 'v6'
multi
  line : PSK "cont"
include /etc/ipsec.d/*.secrets
`
	got, inc, err := ParseIPsecSecrets([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []IPsecSecret{
		{IDs: nil, Type: "PSK", Secret: "shared secret", Line: 2},
		{IDs: []string{"203.0.113.7", "site-a.example"}, Type: "PSK", Secret: "secret", Line: 3},
		{IDs: []string{"@site-b"}, Type: "PSK", Secret: "secret", Line: 4},
		{IDs: []string{"carol"}, Type: "XAUTH", Secret: "x pw", Line: 5},
		{IDs: nil, Type: "RSA", Secret: "gateway.key", Line: 6},
		{IDs: []string{"fe80::1"}, Type: "PSK", Secret: "v6", Line: 7},
		{IDs: []string{"multi", "line"}, Type: "PSK", Secret: "cont", Line: 8},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if len(inc) != 1 || inc[0] != "/etc/ipsec.d/*.secrets" {
		t.Errorf("includes: got %v", inc)
	}
}

func TestParseIPsecSecretsErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
	}{
		{"no colon", "a b PSK x\n", 1},
		{"unterminated", ": PSK \"abc\n", 1},
		{"bad hex", "\n: PSK 0xZZ\n", 2},
		{"unknown type", ": FOO x\n", 1},
		{"missing value", ": PSK\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseIPsecSecrets([]byte(tt.in))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tt.line || !errors.Is(err, ErrSyntax) {
				t.Fatalf("got %v, want ParseError at line %d", err, tt.line)
			}
		})
	}
}

func TestParseCHAPSecrets(t *testing.T) {
	in := "# Secrets for authentication using CHAP\n# client\tserver\tsecret\t\t\tIP addresses\n" +
		"alice\t*\t\"a b#c\"\t10.10.0.50\n" +
		"bob l2tpd bobpw * # comment\n" +
		"carol * cpw 10.10.0.0/32 10.10.0.9\n\n"
	got, err := ParseCHAPSecrets([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []CHAPSecret{
		{Client: "alice", Server: "*", Secret: "a b#c", Addrs: []netip.Addr{netip.MustParseAddr("10.10.0.50")}, Line: 3},
		{Client: "bob", Server: "l2tpd", Secret: "bobpw", Line: 4},
		{Client: "carol", Server: "*", Secret: "cpw", Addrs: []netip.Addr{netip.MustParseAddr("10.10.0.0"), netip.MustParseAddr("10.10.0.9")}, Line: 5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"alice *\n", "a * x 10.10.0.500\n", "a * @/etc/pw\n", "a * \"open\n",
		"\"\" 0 0\n", // fuzz crasher: empty quoted client gave an entry without a client
	} {
		if _, err := ParseCHAPSecrets([]byte(bad)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseCHAPSecrets(%q): got %v, want ErrSyntax", bad, err)
		}
	}
}
