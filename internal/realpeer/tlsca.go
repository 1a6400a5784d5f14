package realpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// TLSCA is a throwaway ECDSA P-256 CA made with the standard library, for
// TLS servers (mosquitto) and clients in tests.
type TLSCA struct {
	// CertPEM is the CA certificate.
	CertPEM []byte
	// CAFile is CertPEM written to a file (for --cafile, cafile, -R) in a
	// directory that lives as long as the test that made the CA.
	CAFile string
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
}

// NewTLSCA creates a CA valid for a day and writes it to CAFile.
func NewTLSCA(t testing.TB, name string) *TLSCA {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"fleetgate test"}, CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &TLSCA{CertPEM: pemfile.EncodeCert(der), cert: cert, key: key,
		CAFile: filepath.Join(dir, "ca.pem"), dir: dir}
	writeFile(t, ca.CAFile, ca.CertPEM)
	return ca
}

// Issue makes a certificate for cn, valid for server and client auth, with
// hosts (IP addresses or DNS names) as subjectAltNames. The key is PKCS#8.
func (ca *TLSCA) Issue(t testing.TB, cn string, hosts ...string) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"fleetgate test"}, CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pemfile.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{
		CertPEM: pemfile.EncodeCert(der),
		KeyPEM:  k,
		DN:      "O=fleetgate test, CN=" + cn,
	}
}

// Pool returns a certificate pool holding only this CA, for a client's
// RootCAs or a server's ClientCAs.
func (ca *TLSCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// TLS returns the certificate and key as a tls.Certificate.
func (c Cert) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	tc, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// IssueFiles is Issue writing the certificate and key as cn.pem and cn.key
// next to CAFile; it returns their paths (for mosquitto_pub --cert/--key).
func (ca *TLSCA) IssueFiles(t testing.TB, cn string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	return ca.Issue(t, cn, hosts...).WriteFiles(t, ca.dir, cn)
}

// ServerTLS returns a server configuration with a fresh certificate for
// hosts that accepts, and verifies, client certificates from this CA
// (tls.VerifyClientCertIfGiven), TLS 1.2 at least.
func (ca *TLSCA) ServerTLS(t testing.TB, hosts ...string) *tls.Config {
	t.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "server", hosts...).TLS(t)},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}
}
