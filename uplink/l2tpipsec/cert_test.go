package l2tpipsec_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"fleetgate test"}, CommonName: "tunnel CA"},
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, cn string, serial int64) *ike.LocalCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{Organization: []string{"fleetgate test"}, CommonName: cn},
		DNSNames:  []string{cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &ike.LocalCert{Chain: [][]byte{der}, Key: key}
}

// TestPairCertificates: ECDSA P-256 certificates instead of a PSK; the
// server session's identity is the client certificate's subject, and
// AllowIdentity can refuse a site, which then fails in IKE phase 1.
func TestPairCertificates(t *testing.T) {
	ca := newCA(t)
	gwCert, siteCert := ca.issue(t, "gw.example", 2), ca.issue(t, "site1.example", 3)
	certs := func(allow bool) l2tpipsectest.Options {
		return l2tpipsectest.Options{
			Client: func(c *l2tpipsec.ClientConfig) { c.PSK, c.Cert, c.CAs = nil, siteCert, ca.pool },
			Server: func(c *l2tpipsec.ServerConfig) {
				c.PSK, c.Cert, c.CAs = nil, gwCert, ca.pool
				c.AllowIdentity = func(id ike.Identity) bool {
					return allow && id.Cert != nil && id.Cert.Subject.CommonName == "site1.example"
				}
			},
		}
	}
	t.Run("accepted", func(t *testing.T) {
		stacktest.CheckGoroutines(t)
		p := l2tpipsectest.NewPair(t, certs(true))
		if got := p.Session.IdentityString(); got != "CN=site1.example,O=fleetgate test" {
			t.Fatalf("server sees identity %q", got)
		}
		if p.Session.Identity().Cert == nil {
			t.Fatal("identity without certificate")
		}
		exchange(t, p, 0, 20)
	})
	t.Run("refused", func(t *testing.T) {
		stacktest.CheckGoroutines(t)
		_, err := l2tpipsectest.Start(t, certs(false))
		if l2tpipsec.PhaseOf(err) != l2tpipsec.PhaseIKE {
			t.Fatalf("refused identity: %v, want an ike phase1 failure", err)
		}
		t.Logf("refused: %v", err)
	})
}

// Validity wide enough for the fake clock's arbitrary instant (IKE checks
// certificates against its Clock).
var (
	notBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
)
