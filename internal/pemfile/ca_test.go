package pemfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// testCA returns a self-signed ECDSA P-256 CA certificate (DER), its key
// and a CRL it signed (DER).
func testCA(t testing.TB) (certDER []byte, key *ecdsa.PrivateKey, crlDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "pemfile test CA"},
		NotBefore:             now,
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		t.Fatal(err)
	}
	crlDER, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(3), ThisUpdate: now, NextUpdate: now.AddDate(0, 0, 7),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(42), RevocationTime: now}},
	}, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return certDER, key, crlDER
}

// keyForms returns key as a PKCS#8 PEM file and as SEC 1 DER.
func keyForms(t testing.TB, key *ecdsa.PrivateKey) (pkcs8PEM, sec1 []byte) {
	t.Helper()
	pkcs8PEM, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pkcs8PEM, sec1
}
