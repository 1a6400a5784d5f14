package server

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

func TestPPPAuthLocalAndRADIUS(t *testing.T) {
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{{Name: "remote-site", Password: "rpw",
		Reply: []string{"Framed-IP-Address = 10.10.0.60", `Framed-Route = "10.10.60.0/24 0.0.0.0 1"`}}}})
	y := fmt.Sprintf("psk: {shared: x}\nmetrics: {listen: \"off\"}\ndns: [10.20.0.53]\nradius: {auth: %q, secret: %q}\n"+
		"identities:\n  - {name: hall7, ppp: {user: hall7, password: hpw, methods: [mschapv2]}, routes: [10.10.8.0/24]}\n"+
		"  - {name: pump2, ppp: {user: pump2, password: ppw, methods: [pap, chap]}}\n", fr.Auth, fr.Secret)
	cfg, err := config.Parse("gw.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost()})
	if err != nil {
		t.Fatal(err)
	}
	env := srv.Env()
	authC := []byte("0123456789abcdef")
	peerC := []byte("fedcba9876543210")
	ctx := context.Background()
	tests := []struct {
		name     string
		req      ppp.AuthRequest
		accept   bool
		identity string
		addr     string
		routes   int
	}{
		{"local mschapv2", ppp.AuthRequest{Method: ppp.AuthMSCHAPv2, Username: "hall7", ID: 1, Challenge: authC, PeerChallenge: peerC,
			Response: ppp.MSCHAPv2NTResponse(authC, peerC, "hall7", "hpw")}, true, "hall7", "10.10.0.2", 1},
		{"local wrong password", ppp.AuthRequest{Method: ppp.AuthMSCHAPv2, Username: "hall7", ID: 1, Challenge: authC, PeerChallenge: peerC,
			Response: ppp.MSCHAPv2NTResponse(authC, peerC, "hall7", "nope")}, false, "", "", 0},
		{"local method not allowed", ppp.AuthRequest{Method: ppp.AuthPAP, Username: "hall7", Password: []byte("hpw")}, false, "", "", 0},
		{"local chap", ppp.AuthRequest{Method: ppp.AuthCHAPMD5, Username: "pump2", ID: 9, Challenge: authC,
			Response: ppp.CHAPMD5Response(9, []byte("ppw"), authC)}, true, "pump2", "10.10.0.3", 0},
		{"radius mschapv2 with framed ip and route", ppp.AuthRequest{Method: ppp.AuthMSCHAPv2, Username: "remote-site", ID: 2, Challenge: authC, PeerChallenge: peerC,
			Response: ppp.MSCHAPv2NTResponse(authC, peerC, "remote-site", "rpw")}, true, "remote-site", "10.10.0.60", 1},
		{"radius reject", ppp.AuthRequest{Method: ppp.AuthPAP, Username: "remote-site", Password: []byte("bad")}, false, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := env.NewPPPAuth("fg-1", "198.51.100.7:4500", Phase1{ID: "198.51.100.7"})
			res, err := a.Authenticate(ctx, &tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Accept != tt.accept {
				t.Fatalf("accept: got %v (%q), want %v", res.Accept, res.Message, tt.accept)
			}
			if !tt.accept {
				if _, err := a.Assign(ctx, tt.req.Username); err == nil {
					t.Error("Assign succeeded without authentication")
				}
				return
			}
			if tt.req.Method == ppp.AuthMSCHAPv2 {
				pw := map[string]string{"hall7": "hpw", "remote-site": "rpw"}[tt.req.Username]
				want := ppp.MSCHAPv2AuthenticatorResponse(ppp.NTPasswordHash(pw), tt.req.Response, peerC, authC, tt.req.Username)
				if res.AuthenticatorResponse != want {
					t.Errorf("authenticator response: got %q, want %q", res.AuthenticatorResponse, want)
				}
			}
			as, err := a.Assign(ctx, tt.req.Username)
			if err != nil {
				t.Fatal(err)
			}
			if as.Addr != netip.MustParseAddr(tt.addr) || as.DNS[0] != netip.MustParseAddr("10.20.0.53") {
				t.Errorf("assignment: got %v dns %v, want %s dns 10.20.0.53", as.Addr, as.DNS[0], tt.addr)
			}
			if a.Identity() != tt.identity || len(a.Routes()) != tt.routes {
				t.Errorf("identity %q routes %v; want %q and %d routes", a.Identity(), a.Routes(), tt.identity, tt.routes)
			}
		})
	}
}
