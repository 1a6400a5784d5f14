package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"hash"
	"math/big"
	"slices"
	"testing"
	"time"
)

// testCA is a throwaway CA issuing leaf certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"fleetgate test"}},
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
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

// issue returns a leaf for cn with an RSA-2048 or ECDSA P-256 key.
func (ca *testCA) issue(t testing.TB, cn string, useRSA bool) *LocalCert {
	t.Helper()
	var key crypto.Signer
	var err error
	if useRSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"fleetgate test"}},
		DNSNames:  []string{cn},
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &LocalCert{Chain: [][]byte{der}, Key: key}
}

func TestCertificateHandshake(t *testing.T) {
	ca := newTestCA(t, "fleetgate test CA")
	for _, tt := range []struct {
		name string
		rsa  bool
		want AuthMethod
	}{{"ECDSA P-256", false, AuthECDSA256}, {"RSA-2048", true, AuthRSASig}} {
		t.Run(tt.name, func(t *testing.T) {
			bridge := ca.issue(t, "site-17.fleet.example", tt.rsa)
			gw := ca.issue(t, "gw.fleet.example", tt.rsa)
			var seen Identity
			p := newPair(t, pairOpts{
				cfgA: func(c *Config) { c.PSK = nil; c.Cert = bridge; c.CAs = ca.pool },
				cfgB: func(c *Config) {
					c.PSK = nil
					c.Cert = gw
					c.CAs = ca.pool
					c.AllowIdentity = func(id Identity) bool {
						seen = id
						return id.Cert != nil && id.Cert.Subject.CommonName == "site-17.fleet.example"
					}
				},
			})
			p.dial(t)
			ev := p.wait(t, p.b, EventChildUp, 0)
			p.wait(t, p.a, EventChildUp, 0)
			if ev.Peer.Cert == nil || ev.Peer.ID.Type != IDDERASN1DN {
				t.Fatalf("responder's peer identity: %+v", ev.Peer)
			}
			if seen.Cert.Subject.CommonName != "site-17.fleet.example" {
				t.Errorf("AllowIdentity saw %v", seen.Cert.Subject)
			}
			p.b.eng.mu.Lock()
			var auth AuthMethod
			for _, sa := range p.b.eng.sas {
				auth = sa.auth
			}
			p.b.eng.mu.Unlock()
			if auth != tt.want {
				t.Errorf("auth method: got %d, want %d", auth, tt.want)
			}
		})
	}
}

func TestCertificateRejected(t *testing.T) {
	ca := newTestCA(t, "fleetgate test CA")
	rogue := newTestCA(t, "rogue CA")
	tests := []struct {
		name  string
		cert  *LocalCert
		allow func(Identity) bool
		want  NotifyType
	}{
		{"unknown CA", rogue.issue(t, "site-17.fleet.example", false), nil, NotifyInvalidCertificate},
		{"identity not allowed", ca.issue(t, "site-99.fleet.example", false), func(id Identity) bool { return false }, NotifyInvalidIDInformation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, pairOpts{
				cfgA: func(c *Config) { c.PSK = nil; c.Cert = tt.cert; c.CAs = ca.pool },
				cfgB: func(c *Config) {
					c.PSK = nil
					c.Cert = ca.issue(t, "gw", false)
					c.CAs = ca.pool
					c.AllowIdentity = tt.allow
				},
			})
			p.dial(t)
			ev := p.wait(t, p.a, EventIKEDown, 0)
			var ne *NotifyError
			if !errors.As(ev.Err, &ne) || ne.Type != tt.want {
				t.Fatalf("got %v, want notify %d", ev.Err, tt.want)
			}
			if got := p.b.eng.Stats().AuthFailures.Load(); got != 1 {
				t.Errorf("AuthFailures: got %d, want 1", got)
			}
		})
	}
}

// TestAuthHashECDSAUsesCurveHash: with ECDSA the HASH_I/HASH_R prf is
// HMAC with the curve's hash (RFC 4754 §7), whatever the negotiated hash;
// strongSwan's SHA-1 proposals with P-256 certificates only verify this
// way. RSA and PSK keep the negotiated prf (RFC 2409 §5).
func TestAuthHashECDSAUsesCurveHash(t *testing.T) {
	sa := &ikeSA{
		prop:   IKEProposal{Hash: HashSHA1},
		saBody: []byte("SAi_b"), gxi: []byte("g^xi"), gxr: []byte("g^xr"),
		keys: phase1Keys{skeyid: []byte("SKEYID for the test")},
		ci:   [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, cr: [8]byte{9, 10, 11, 12, 13, 14, 15, 16},
	}
	idBody := []byte("IDii_b")
	want := func(h func() hash.Hash, initiator bool) []byte {
		m := hmac.New(h, sa.keys.skeyid)
		if initiator {
			m.Write(slices.Concat(sa.gxi, sa.gxr, sa.ci[:], sa.cr[:]))
		} else {
			m.Write(slices.Concat(sa.gxr, sa.gxi, sa.cr[:], sa.ci[:]))
		}
		m.Write(slices.Concat(sa.saBody, idBody))
		return m.Sum(nil)
	}
	for _, tt := range []struct {
		auth AuthMethod
		h    func() hash.Hash
	}{
		{AuthECDSA256, sha256.New}, {AuthECDSA384, sha512.New384},
		{AuthRSASig, sha1.New}, {AuthPSK, sha1.New},
	} {
		sa.auth = tt.auth
		for _, initiator := range []bool{true, false} {
			if got, w := sa.authHash(initiator, idBody), want(tt.h, initiator); !bytes.Equal(got, w) {
				t.Errorf("auth %d initiator=%v: HASH %x (%d bytes), want %x (%d bytes)", tt.auth, initiator, got, len(got), w, len(w))
			}
		}
	}
}
