package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// File names of the site CA inside its directory.
const (
	caCertFile = "ca.pem"
	caKeyFile  = "ca.key"
)

// CA is the site certificate authority: ECDSA P-256, issues endpoint
// certificates (CN = endpoint name) and the bridge's DTLS server certificate.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertPEM is Cert in PEM form, for devices' trust stores.
	CertPEM []byte
	// Pool holds Cert, for verifying endpoint certificates.
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
	dir  string // where ca.pem, ca.key and crl.pem live ("" for ParseCA)
}

// LoadOrCreateCA loads ca.pem/ca.key from dir, creating a new CA named
// "<site> site CA" (valid 10 years) when both are missing.
func LoadOrCreateCA(dir, site string) (*CA, error) {
	cb, cerr := os.ReadFile(filepath.Join(dir, caCertFile))
	kb, kerr := os.ReadFile(filepath.Join(dir, caKeyFile))
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
		return createCA(dir, site)
	}
	if cerr != nil || kerr != nil {
		return nil, fmt.Errorf("device: load CA from %s: %w", dir, errors.Join(cerr, kerr))
	}
	ca, err := ParseCA(cb, kb)
	if err != nil {
		return nil, err
	}
	ca.dir = dir
	return ca, nil
}

// ParseCA builds a CA from its PEM certificate and PEM (PKCS#8 or SEC 1) key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, key, err := pemfile.ParseECDSAPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("device: CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, CertPEM: certPEM, Pool: pool, key: key}, nil
}

func createCA(dir, site string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("device: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: site + " site CA", Organization: []string{"fleetgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("device: create CA: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("device: CA key: %w", err)
	}
	certPEM := pemfile.EncodeCert(der)
	keyPEM := pemfile.Encode(pemfile.TypePKCS8Key, kder)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("device: CA dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), keyPEM); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, caCertFile), certPEM); err != nil {
		return nil, err
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	ca.dir = dir
	return ca, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("device: crypto/rand failed: " + err.Error()) // crypto/rand never fails on Linux
	}
	return n
}

// Issue returns a new ECDSA P-256 certificate and key (both PEM, key in
// SEC 1 "EC PRIVATE KEY" form, which mbedTLS, wolfSSL and libcoap read)
// with common name cn, valid for years. hosts (DNS names or IPs) add
// subject alternative names and server use.
func (ca *CA) Issue(cn string, years int, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("device: key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(years, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("device: issue %q: %w", cn, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("device: key: %w", err)
	}
	return pemfile.EncodeCert(der), pemfile.Encode(pemfile.TypeECKey, kder), nil
}

// IssueTLS is Issue returning a tls.Certificate (leaf followed by the CA).
func (ca *CA) IssueTLS(cn string, years int, hosts ...string) (tls.Certificate, error) {
	c, k, err := ca.Issue(cn, years, hosts...)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(append(c, ca.CertPEM...), k)
}
