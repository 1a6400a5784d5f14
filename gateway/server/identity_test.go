package server

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestBindPPP: which PPP identities may follow which phase 1, for local
// users and RADIUS users, and the methods offered.
func TestBindPPP(t *testing.T) {
	y := "psk: {shared: s}\nradius: {auth: 127.0.0.1:1812, secret: r, phase1_id_attribute: Filter-Id}\nidentities:\n" +
		"  - {name: hall7, auth: cert, id: hall7.example, ppp: {password: a, methods: [mschapv2]}}\n" +
		"  - {name: site-d, auth: psk, id: d.example, psk: own, ppp: {password: b, methods: [pap]}}\n" +
		"  - {name: site-e, auth: psk, id: e.example, ppp: {password: c}}\n" +
		"  - {name: ops, auth: psk, ppp: {password: d, methods: [chap, pap]}}\n"
	cfg, err := config.Parse("gw.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "hall7"}, DNSNames: []string{"hall7.example"}}
	stranger := &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x.example"}}
	shared := Phase1{ID: "attacker.example"}
	for _, tt := range []struct {
		p1       Phase1
		identity string
		ok       bool
	}{
		{Phase1{Cert: cert}, "hall7", true},
		{Phase1{Cert: cert}, "ops", false},
		{Phase1{Cert: stranger}, "hall7", false},
		{shared, "hall7", false}, // finding 1
		{shared, "site-d", false},
		{shared, "site-e", false}, // has an ID: must present it
		{shared, "ops", true},
		{Phase1{ID: "d.example"}, "site-d", true},
		{Phase1{ID: "d.example"}, "ops", false},
		{Phase1{ID: "e.example"}, "site-e", true},
		{Phase1{ID: "hall7.example"}, "hall7", false}, // a cert identity's ID over a PSK
		{Phase1{None: true}, "ops", true},
		{Phase1{None: true}, "site-e", false},
	} {
		err := BindPPP(cfg, tt.p1, cfg.Identity(tt.identity))
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrIdentityMismatch)) {
			t.Errorf("%s then PPP %s: got %v, want ok=%v", tt.p1, tt.identity, err, tt.ok)
		}
	}
	for _, tt := range []struct {
		p1      Phase1
		boundTo []string
		ok      bool
	}{
		{shared, nil, true},
		{Phase1{Cert: cert}, nil, false},
		{Phase1{Cert: cert}, []string{"hall7.example"}, true},
		{shared, []string{"hall7.example"}, false},
		{Phase1{ID: "d.example"}, nil, false},
		{Phase1{ID: "r.example"}, []string{"r.example"}, true},
	} {
		if err := BindRADIUS(cfg, tt.p1, "ruser", tt.boundTo); (err == nil) != tt.ok {
			t.Errorf("RADIUS after %s bound to %v: got %v, want ok=%v", tt.p1, tt.boundTo, err, tt.ok)
		}
	}
	for _, tt := range []struct {
		p1   Phase1
		want []ppp.AuthMethod
	}{
		{Phase1{Cert: cert}, []ppp.AuthMethod{ppp.AuthMSCHAPv2}},
		{Phase1{ID: "d.example"}, []ppp.AuthMethod{ppp.AuthPAP}},
		{shared, []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthCHAPMD5, ppp.AuthPAP}}, // ops (chap, pap) + RADIUS
		{Phase1{Cert: stranger}, nil},
	} {
		if got := PPPMethods(cfg, tt.p1); !slices.Equal(got, tt.want) {
			t.Errorf("methods after %s: got %v, want %v", tt.p1, got, tt.want)
		}
	}
}
