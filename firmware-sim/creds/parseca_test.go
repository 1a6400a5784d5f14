package creds

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// TestParseCASiteCA: the bridge's site CA (downlink/registry, PKCS#8 key on
// disk) parses, and a device certificate issued from it verifies against
// the site CA's own pool, as the bridge's DTLS/TLS servers check it.
func TestParseCASiteCA(t *testing.T) {
	dir := t.TempDir()
	site, err := registry.LoadOrCreateCA(dir, "hall7")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(site.CertPEM, kb)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue("sensor-31")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: site.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device certificate from the parsed site CA: %v", err)
	}
}

func TestParseCARejects(t *testing.T) {
	a, err := NewCA("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCA("b")
	if err != nil {
		t.Fatal(err)
	}
	bk, err := x509.MarshalPKCS8PrivateKey(b.key)
	if err != nil {
		t.Fatal(err)
	}
	bKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: bk})
	leaf, err := a.Issue("leaf")
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, leafKey, err := PEM(leaf)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][2][]byte{
		"empty":        {nil, nil},
		"key mismatch": {a.CertPEM(), bKey},
		"not a CA":     {leafPEM, leafKey},
		"garbage key":  {a.CertPEM(), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
	} {
		if _, err := ParseCA(in[0], in[1]); err == nil {
			t.Errorf("%s: ParseCA accepted it", name)
		} else if name != "garbage key" && !errors.Is(err, ErrSyntax) {
			t.Errorf("%s: got %v, want ErrSyntax", name, err)
		}
	}
}

func FuzzParseCA(f *testing.F) {
	ca, err := NewCA("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		c, err := ParseCA(certPEM, keyPEM)
		if err == nil && (c.Cert == nil || c.key == nil || !c.Cert.IsCA) {
			t.Fatalf("ParseCA accepted an incomplete CA: %+v", c)
		}
	})
}
