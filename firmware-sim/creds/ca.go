package creds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// CA is a throwaway ECDSA P-256 certificate authority for simulated fleets
// and tests: it issues device (client) and server certificates.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Pool holds Cert, for RootCAs/ClientCAs.
	Pool *x509.CertPool
}

// NewCA creates a CA valid for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &CA{Cert: c, key: key, Pool: pool}, nil
}

// Issue returns a P-256 leaf certificate with common name cn. hosts
// (DNS names or IPs) make it a server certificate as well.
func (ca *CA) Issue(cn string, hosts ...string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertPEM returns the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pemfile.EncodeCert(ca.Cert.Raw)
}

// PEM returns a certificate chain and its key in PEM, for peers that read
// files (mosquitto, libcoap).
func PEM(c *tls.Certificate) (certPEM, keyPEM []byte, err error) {
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pemfile.EncodeCert(der)...)
	}
	keyPEM, err = pemfile.EncodeKey(c.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creds: %w", err)
	}
	return certPEM, keyPEM, nil
}

// IssueFleet adds a KindCert entry with a fresh certificate for each name.
func (ca *CA) IssueFleet(s *Set, names []string) error {
	for _, n := range names {
		c, err := ca.Issue(n)
		if err != nil {
			return err
		}
		if err := s.Add(Entry{Name: n, Kind: KindCert, Identity: n, Cert: c}); err != nil {
			return err
		}
	}
	return nil
}

// ParseCA returns a CA from a PEM certificate and its PEM ECDSA key (PKCS#8
// or SEC 1), e.g. the bridge's site CA, so that a simulated fleet's
// certificates chain to the CA the bridge trusts.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	c, key, err := pemfile.ParseECDSAPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: CA: %w", ErrSyntax, err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("%w: CA: %q is not a CA certificate", ErrSyntax, c.Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &CA{Cert: c, key: key, Pool: pool}, nil
}
