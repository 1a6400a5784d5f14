package radius

import (
	"net/netip"
	"testing"

	"layeh.com/radius"
	"layeh.com/radius/rfc2866"
)

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

// FuzzParseIPv6Prefix: Framed-/Delegated-IPv6-Prefix values: never a
// panic; what is accepted is a masked global IPv6 /48../64.
func FuzzParseIPv6Prefix(f *testing.F) {
	for _, v := range [][]byte{
		{0, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 8, 0, 0},
		{0, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 8, 0},
		{0, 64, 0xfe, 0x80, 0, 0, 0, 0, 0, 0},
		{0, 129},
		{0, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 8, 0, 0, 1},
		{},
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		pf, err := ParseIPv6Prefix(v)
		if err != nil {
			return
		}
		if !pf.Addr().Is6() || pf.Addr().Is4In6() || pf.Masked() != pf || pf.Bits() < 48 || pf.Bits() > 64 {
			t.Fatalf("ParseIPv6Prefix(%x) = %v", v, pf)
		}
	})
}

// FuzzDAEHandle feeds arbitrary datagrams to the Disconnect/CoA handler:
// never a panic, and nothing without a valid authenticator is answered
// or acted on.
func FuzzDAEHandle(f *testing.F) {
	secret := []byte("dae-secret")
	good := radius.New(radius.CodeDisconnectRequest, secret)
	_ = rfc2866.AcctSessionID_SetString(good, "gw1-abcd-5")
	b, _ := good.Encode()
	f.Add(b)
	f.Add([]byte{40, 1, 0, 3})
	f.Add(append([]byte{43, 1, 0, 30}, make([]byte, 26)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		acted := 0
		d := newDAE(DAEConfig{Secret: secret, Disconnect: func(SessionMatch) int { acted++; return 1 }}, nil)
		reply := d.handle(netip.MustParseAddr("127.0.0.1"), in)
		if !radius.IsAuthenticRequest(in, secret) && (reply != nil || acted > 0) {
			t.Fatalf("unauthentic request answered or acted on: %x", in)
		}
	})
}
