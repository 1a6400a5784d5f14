package pki

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

func newStore(t *testing.T, keyType string) *Store {
	t.Helper()
	s := &Store{Dir: t.TempDir()}
	if _, err := s.CreateCA(CAOptions{KeyType: keyType}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssueVerifyRevoke(t *testing.T) {
	for _, kt := range []string{KeyECDSA, KeyRSA} {
		t.Run(kt, func(t *testing.T) {
			s := newStore(t, kt)
			ca, _, err := s.CA()
			if err != nil {
				t.Fatal(err)
			}
			switch kt {
			case KeyECDSA:
				if _, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok {
					t.Errorf("CA key: got %T, want ECDSA", ca.PublicKey)
				}
			case KeyRSA:
				if k, ok := ca.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
					t.Errorf("CA key: got %T, want RSA-2048", ca.PublicKey)
				}
			}
			site, err := s.Issue(IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.example.net", "203.0.113.7"}, KeyType: kt})
			if err != nil {
				t.Fatal(err)
			}
			gw, err := s.Issue(IssueOptions{Name: "gw1", Kind: KindGateway})
			if err != nil {
				t.Fatal(err)
			}
			if got := gw.ExtKeyUsage; len(got) != 1 || got[0] != x509.ExtKeyUsageServerAuth {
				t.Errorf("gateway EKU: got %v, want serverAuth", got)
			}
			// Plain crypto/x509 verification against the CA.
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := site.Verify(x509.VerifyOptions{Roots: roots, DNSName: "site-hall7.example.net", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("x509 verify site cert: %v", err)
			}
			v, err := LoadVerifier(filepath.Join(s.Dir, "ca.crt"), filepath.Join(s.Dir, "crl.pem"))
			if err != nil {
				t.Fatal(err)
			}
			ids, err := v.Verify(site, nil, time.Time{})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got, want := strings.Join(ids, ","), "site-hall7,site-hall7.example.net,203.0.113.7"; got != want {
				t.Errorf("ids: got %q, want %q", got, want)
			}
			if _, err := s.Issue(IssueOptions{Name: "site-hall7"}); !errors.Is(err, ErrExists) {
				t.Errorf("second issue: got %v, want ErrExists", err)
			}
			if err := s.Revoke("site-hall7"); err != nil {
				t.Fatal(err)
			}
			v2, err := LoadVerifier(filepath.Join(s.Dir, "ca.crt"), filepath.Join(s.Dir, "crl.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v2.Verify(site, nil, time.Time{}); !errors.Is(err, ErrRevoked) {
				t.Errorf("revoked cert: got %v, want ErrRevoked", err)
			}
			if _, err := v2.Verify(gw, nil, time.Time{}); err != nil {
				t.Errorf("unrevoked cert after CRL: %v", err)
			}
			// Re-issue after revocation works.
			if _, err := s.Issue(IssueOptions{Name: "site-hall7"}); err != nil {
				t.Errorf("re-issue after revoke: %v", err)
			}
		})
	}
}

func TestVerifyRejectsForeignCAAndExpired(t *testing.T) {
	a, b := newStore(t, KeyECDSA), newStore(t, KeyECDSA)
	cert, err := b.Issue(IssueOptions{Name: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(filepath.Join(a.Dir, "ca.crt"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(cert, nil, time.Time{}); err == nil {
		t.Error("certificate from another CA accepted")
	}
	own, err := a.Issue(IssueOptions{Name: "short", Lifetime: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(own, nil, time.Now().Add(72*time.Hour)); err == nil {
		t.Error("expired certificate accepted")
	}
	// A CRL signed by another CA is refused.
	crlB, err := pemfile.ReadCRL(filepath.Join(b.Dir, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caA, _ := pemfile.ReadCert(filepath.Join(a.Dir, "ca.crt"))
	if _, err := NewVerifier(caA, crlB); err == nil {
		t.Error("foreign CRL accepted")
	}
}

func TestExpiring(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	s := &Store{Dir: t.TempDir(), Now: func() time.Time { return now }}
	if _, err := s.CreateCA(CAOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []IssueOptions{{Name: "late", Lifetime: 400 * 24 * time.Hour}, {Name: "soon", Lifetime: 10 * 24 * time.Hour}, {Name: "gone", Lifetime: 5 * 24 * time.Hour}} {
		if _, err := s.Issue(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke("gone"); err != nil {
		t.Fatal(err)
	}
	idx, err := s.Index()
	if err != nil {
		t.Fatal(err)
	}
	psks := []Expiry{{Name: "shared", Type: "psk", Kind: "shared", NotAfter: now.Add(20 * 24 * time.Hour)}}
	within, err := ParseWithin("30d")
	if err != nil || within != 30*24*time.Hour {
		t.Fatalf("ParseWithin(30d) = %v, %v", within, err)
	}
	got := Expiring(idx, psks, now, within)
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
	}
	if want := "soon,shared"; strings.Join(names, ",") != want {
		t.Errorf("expiring within 30d: got %v, want %s", names, want)
	}
	if all := Expiring(idx, psks, now, 0); len(all) != 3 {
		t.Errorf("all: got %d, want 3 (late, soon, shared)", len(all))
	}
}

// TestStrongSwanPKIReadsOurCerts checks interop: strongSwan's own `pki
// --print` parses our CA, site certificate and CRL.
func TestStrongSwanPKIReadsOurCerts(t *testing.T) {
	bin := testenv.RequireBinary(t, "pki")
	s := newStore(t, KeyECDSA)
	if _, err := s.Issue(IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.example.net"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke("site-hall7"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--print", "--in", filepath.Join(s.Dir, "ca.crt")}, []string{"subject: \"O=fleetgate, CN=fleetgate CA\"", "flags: CA CRLSign self-signed", "pubkey: ECDSA 256 bits"}},
		{[]string{"--print", "--in", filepath.Join(s.Dir, "certs", "site-hall7.crt")}, []string{"altNames: site-hall7.example.net", "issuer: \"O=fleetgate, CN=fleetgate CA\"", "flags: clientAuth", "pubkey: ECDSA 256 bits"}},
		{[]string{"--print", "--type", "crl", "--in", filepath.Join(s.Dir, "crl.pem")}, []string{"1 revoked certificate"}},
	}
	for _, tt := range tests {
		out, err := exec.Command(bin, tt.args...).CombinedOutput()
		if err != nil {
			t.Fatalf("pki %v: %v\n%s", tt.args, err, out)
		}
		norm := strings.Join(strings.Fields(string(out)), " ")
		for _, w := range tt.want {
			if !strings.Contains(norm, w) {
				t.Errorf("pki %v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(s.Dir, "certs", "site-hall7.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: got %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// TestOnlyGatewayCertsAreGateways: the bridge's ike.GatewayPolicy (SAN =
// gateway_id, serverAuth) accepts a gateway certificate and refuses site
// and device certificates even when they carry the gateway's name: only
// --kind gateway gets serverAuth.
func TestOnlyGatewayCertsAreGateways(t *testing.T) {
	s := newStore(t, KeyECDSA)
	ca, _, err := s.CA()
	if err != nil {
		t.Fatal(err)
	}
	policy := &ike.GatewayPolicy{ID: "gw1.example.net"}
	for _, tt := range []struct {
		kind string
		ok   bool
	}{{KindGateway, true}, {KindSite, false}, {KindDevice, false}} {
		c, err := s.Issue(IssueOptions{Name: "x-" + tt.kind, Kind: tt.kind, SANs: []string{"gw1.example.net"}})
		if err != nil {
			t.Fatal(err)
		}
		if has := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth); has != tt.ok {
			t.Errorf("%s certificate: serverAuth %v, want %v", tt.kind, has, tt.ok)
		}
		err = policy.Check(c, []*x509.Certificate{c, ca}, time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%s certificate as the gateway: %v, want accepted=%v", tt.kind, err, tt.ok)
		}
	}
}
