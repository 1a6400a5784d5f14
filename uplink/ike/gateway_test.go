package ike

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

var gwTestNow = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

// issueKind issues a leaf like `gateway pki` does: serverAuth for a
// gateway, clientAuth for a site; sans as subjectAltNames.
func (ca *testCA) issueKind(t testing.TB, cn string, serial int64, usage x509.ExtKeyUsage, sans ...string) (*LocalCert, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &LocalCert{Chain: [][]byte{der}, Key: key}, c
}

func (ca *testCA) crl(t testing.TB, serials ...int64) *x509.RevocationList {
	t.Helper()
	rl := &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: gwTestNow.Add(-time.Hour), NextUpdate: gwTestNow.Add(time.Hour)}
	for _, s := range serials {
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: gwTestNow})
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	out, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGatewayPolicyCheck: only a serverAuth certificate naming the
// configured ID in a SAN, and not on the CRL, is the gateway.
func TestGatewayPolicyCheck(t *testing.T) {
	ca, other := newTestCA(t, "fleet CA"), newTestCA(t, "other CA")
	_, gw := ca.issueKind(t, "gw1", 10, x509.ExtKeyUsageServerAuth, "gw.fleet.example", "203.0.113.2")
	_, site := ca.issueKind(t, "plant-b", 11, x509.ExtKeyUsageClientAuth, "gw.fleet.example")
	_, cnOnly := ca.issueKind(t, "gw.fleet.example", 12, x509.ExtKeyUsageServerAuth)
	chain := func(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c, ca.cert} }
	for _, tt := range []struct {
		name string
		p    GatewayPolicy
		leaf *x509.Certificate
		want string // "" accepts; else a word of the error
	}{
		{"gateway by DNS SAN", GatewayPolicy{ID: "GW.fleet.example"}, gw, ""},
		{"gateway by IP SAN", GatewayPolicy{ID: "203.0.113.2"}, gw, ""},
		{"gateway, empty CRL", GatewayPolicy{ID: "gw.fleet.example", CRL: func() *x509.RevocationList { return ca.crl(t) }}, gw, ""},
		{"no ID configured", GatewayPolicy{}, gw, "no gateway ID"},
		{"other name", GatewayPolicy{ID: "gw2.fleet.example"}, gw, "does not name"},
		{"CN is not a SAN", GatewayPolicy{ID: "gw.fleet.example"}, cnOnly, "does not name"},
		{"site certificate", GatewayPolicy{ID: "gw.fleet.example"}, site, "extended key usage"},
		{"revoked", GatewayPolicy{ID: "gw.fleet.example", CRL: func() *x509.RevocationList { return ca.crl(t, 5, 10) }}, gw, "revoked"},
		{"CRL of another CA", GatewayPolicy{ID: "gw.fleet.example", CRL: func() *x509.RevocationList { return other.crl(t) }}, gw, "not signed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Check(tt.leaf, chain(tt.leaf), gwTestNow)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (!errors.Is(err, ErrNotGateway) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want ErrNotGateway with %q", err, tt.want)
			}
		})
	}
}

// TestGatewayPolicyHandshake: an initiator with a GatewayPolicy refuses a
// responder holding a site certificate of the same CA (phase 1 fails with
// ErrNotGateway, counted as an authentication failure) and accepts the
// real gateway.
func TestGatewayPolicyHandshake(t *testing.T) {
	ca := newTestCA(t, "fleet CA")
	siteA, _ := ca.issueKind(t, "plant-a", 20, x509.ExtKeyUsageClientAuth, "plant-a.sites.example")
	siteB, _ := ca.issueKind(t, "plant-b", 21, x509.ExtKeyUsageClientAuth, "gw.fleet.example")
	gw, _ := ca.issueKind(t, "gw1", 22, x509.ExtKeyUsageServerAuth, "gw.fleet.example")
	for _, tt := range []struct {
		name  string
		cert  *LocalCert
		wantE bool
	}{{"rogue with a site certificate", siteB, true}, {"real gateway", gw, false}} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, pairOpts{
				cfgA: func(c *Config) {
					c.PSK, c.Cert, c.CAs = nil, siteA, ca.pool
					c.Gateway = &GatewayPolicy{ID: "gw.fleet.example"}
				},
				cfgB: func(c *Config) { c.PSK, c.Cert, c.CAs = nil, tt.cert, ca.pool },
			})
			p.dial(t)
			if !tt.wantE {
				p.wait(t, p.a, EventChildUp, 0)
				return
			}
			ev := p.wait(t, p.a, EventIKEDown, 0)
			if !errors.Is(ev.Err, ErrNotGateway) || !errors.Is(ev.Err, ErrInvalidCert) {
				t.Fatalf("got %v, want ErrNotGateway", ev.Err)
			}
			if got := p.a.eng.Stats().AuthFailures.Load(); got != 1 {
				t.Errorf("initiator AuthFailures: got %d, want 1", got)
			}
		})
	}
}
