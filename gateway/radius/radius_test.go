package radius

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestMSCHAPv2Vectors checks the test helper against RFC 2759 §9.2.
func TestMSCHAPv2Vectors(t *testing.T) {
	auth := unhex("5B5D7C7D7B3F2F3E3C2C602132262628")
	peer := unhex("21402324255E262A28295F2B3A337C7E")
	nt := ntResponse(auth, peer, "User", "clientPass")
	if got, want := strings.ToUpper(hex.EncodeToString(nt)), "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"; got != want {
		t.Fatalf("NT-Response: got %s, want %s", got, want)
	}
	if got, want := authenticatorResponse(auth, peer, nt, "User", "clientPass"), "S=407A5589115FD0D6209F510FE9C04566932CDA56"; got != want {
		t.Fatalf("authenticator response: got %s, want %s", got, want)
	}
}

func TestParseFramedRoute(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"10.10.8.0/24 0.0.0.0 1", "10.10.8.0/24", false},
		{"10.10.8.5/24", "10.10.8.0/24", false},
		{"10.10.9.0 255.255.255.0 1", "10.10.9.0/24", false},
		{"10.10.9.7", "10.10.9.7/32", false},
		{"", "", true},
		{"2001:db8::/64", "", true},
		{"garbage 1 2", "", true},
	}
	for _, tt := range tests {
		got, err := ParseFramedRoute(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && got.String() != tt.want) {
			t.Errorf("ParseFramedRoute(%q) = %v, %v; want %s, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNoServer(t *testing.T) {
	c := New(Config{Auth: "127.0.0.1:9", Secret: []byte("x"), Timeout: 300 * time.Millisecond})
	_, err := c.Authenticate(context.Background(), Request{Method: MethodPAP, User: "u", Password: "p"})
	if err == nil {
		t.Fatal("got nil error with no server")
	}
	if _, err := c.Authenticate(context.Background(), Request{Method: MethodCHAP, User: "u"}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("CHAP without response: got %v, want ErrBadRequest", err)
	}
}

// TestFreeRADIUS runs PAP, CHAP and MS-CHAPv2 and accounting against a real
// FreeRADIUS.
func TestFreeRADIUS(t *testing.T) {
	srv := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{
		{Name: "site-hall7", Password: "hall7-pw", Reply: []string{"Framed-IP-Address = 10.10.0.77", `Framed-Route = "10.10.12.0/24 0.0.0.0 1"`, `Framed-Route = "10.10.13.0/24 0.0.0.0 1"`, `Class = "tenant-a"`}},
		{Name: "ops", Password: "ops-pw"},
	}})
	c := New(Config{Auth: srv.Auth, Acct: srv.Acct, Secret: []byte(srv.Secret), NASIdentifier: "gw-test"})
	ctx := context.Background()

	authChal := unhex("5B5D7C7D7B3F2F3E3C2C602132262628")
	peerChal := unhex("21402324255E262A28295F2B3A337C7E")
	chapChal := unhex("00112233445566778899aabbccddeeff")
	chapResp := func(id byte, pw string) []byte {
		h := md5.New()
		h.Write([]byte{id})
		h.Write([]byte(pw))
		h.Write(chapChal)
		return h.Sum(nil)
	}
	tests := []struct {
		name   string
		req    Request
		accept bool
	}{
		{"pap accept", Request{Method: MethodPAP, User: "ops", Password: "ops-pw"}, true},
		{"pap reject", Request{Method: MethodPAP, User: "ops", Password: "wrong"}, false},
		{"pap unknown user", Request{Method: MethodPAP, User: "nobody", Password: "x"}, false},
		{"chap accept", Request{Method: MethodCHAP, User: "ops", CHAPID: 7, CHAPChallenge: chapChal, CHAPResponse: chapResp(7, "ops-pw")}, true},
		{"chap reject", Request{Method: MethodCHAP, User: "ops", CHAPID: 7, CHAPChallenge: chapChal, CHAPResponse: chapResp(7, "bad")}, false},
		{"mschapv2 accept", Request{Method: MethodMSCHAPv2, User: "site-hall7", MSCHAPIdent: 3, MSCHAPAuthChallenge: authChal, MSCHAPPeerChallenge: peerChal,
			MSCHAPNTResponse: ntResponse(authChal, peerChal, "site-hall7", "hall7-pw")}, true},
		{"mschapv2 reject", Request{Method: MethodMSCHAPv2, User: "site-hall7", MSCHAPIdent: 3, MSCHAPAuthChallenge: authChal, MSCHAPPeerChallenge: peerChal,
			MSCHAPNTResponse: ntResponse(authChal, peerChal, "site-hall7", "nope")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Authenticate(ctx, tt.req)
			if err != nil {
				t.Fatalf("Authenticate: %v\n%s", err, srv.Log())
			}
			if res.Accept != tt.accept {
				t.Fatalf("accept: got %v, want %v", res.Accept, tt.accept)
			}
			if tt.name == "mschapv2 accept" {
				want := authenticatorResponse(authChal, peerChal, tt.req.MSCHAPNTResponse, "site-hall7", "hall7-pw")
				if res.MSCHAP2Success != want {
					t.Errorf("MS-CHAP2-Success: got %q, want %q", res.MSCHAP2Success, want)
				}
				if res.FramedIP != netip.MustParseAddr("10.10.0.77") {
					t.Errorf("Framed-IP-Address: got %v, want 10.10.0.77", res.FramedIP)
				}
				if len(res.FramedRoutes) != 2 || res.FramedRoutes[0] != netip.MustParsePrefix("10.10.12.0/24") || res.FramedRoutes[1] != netip.MustParsePrefix("10.10.13.0/24") {
					t.Errorf("Framed-Route: got %v", res.FramedRoutes)
				}
				if string(res.Class) != "tenant-a" {
					t.Errorf("Class: got %q", res.Class)
				}
			}
		})
	}
	if got := c.Stats.Accepts.Load(); got != 3 {
		t.Errorf("Accepts: got %d, want 3", got)
	}

	// Accounting: Start, Interim, Stop with counters beyond 2^32 bytes.
	rec := AcctRecord{SessionID: "fg-42", User: "site-hall7", CallingID: "198.51.100.7", FramedIP: netip.MustParseAddr("10.10.0.77"), Class: []byte("tenant-a")}
	rec.Status = AcctStart
	if err := c.Account(ctx, rec); err != nil {
		t.Fatalf("Start: %v\n%s", err, srv.Log())
	}
	rec.Status, rec.InputBytes, rec.OutputBytes, rec.InputPackets, rec.OutputPackets, rec.SessionTime = AcctInterim, 123456, 654321, 100, 200, 5*time.Minute
	if err := c.Account(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.Status, rec.InputBytes, rec.OutputBytes, rec.InputPackets, rec.OutputPackets, rec.SessionTime, rec.TerminateCause = AcctStop, 5<<32+1000, 2000, 3000000, 4000, time.Hour, CauseLostCarrier
	if err := c.Account(ctx, rec); err != nil {
		t.Fatal(err)
	}
	detail := srv.Detail()
	for _, want := range []string{
		`Acct-Status-Type = Start`, `Acct-Status-Type = Interim-Update`, `Acct-Status-Type = Stop`,
		`Acct-Session-Id = "fg-42"`, `Framed-IP-Address = 10.10.0.77`, `Calling-Station-Id = "198.51.100.7"`,
		`Acct-Input-Octets = 123456`, `Acct-Output-Octets = 654321`, `Acct-Input-Packets = 100`,
		`Acct-Input-Octets = 1000`, `Acct-Input-Gigawords = 5`, `Acct-Input-Packets = 3000000`,
		`Acct-Session-Time = 3600`, `Acct-Terminate-Cause = Lost-Carrier`, `NAS-Identifier = "gw-test"`, `Class = 0x74656e616e742d61`,
	} {
		if !strings.Contains(detail, want) {
			t.Errorf("detail file lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^\tAcct-Status-Type`).FindAllString(detail, -1)); n != 3 {
		t.Errorf("detail records: got %d, want 3\n%s", n, detail)
	}
	if got := c.Stats.AcctSent.Load(); got != 3 {
		t.Errorf("AcctSent: got %d, want 3", got)
	}
}
