package statuspage

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA makes a CA and returns a function issuing leaves from it.
func testCA(t *testing.T, name string) (*x509.Certificate, []byte, func(cn string, server bool) tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	serial := int64(2)
	issue := func(cn string, server bool) tls.Certificate {
		lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial++
		lt := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			lt.ExtKeyUsage, lt.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		d, err := x509.CreateCertificate(rand.Reader, lt, ca, &lk.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{d}, PrivateKey: lk}
	}
	return ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), issue
}

// TestClientCertificates: a page on a non-loopback listener with
// client_ca and no token reads for a client certificate of that CA only.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, caPEM, issue := testCA(t, "ops CA")
	_, _, otherIssue := testCA(t, "other CA")
	srvCert := issue("gw", true)
	kb, _ := x509.MarshalECPrivateKey(srvCert.PrivateKey.(*ecdsa.PrivateKey))
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	certF := write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvCert.Certificate[0]}))
	keyF := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	caF := write("ca.pem", caPEM)
	tc, err := ServerTLS(certF, keyF, caF)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerTLS(certF, keyF, certF+".missing"); err == nil {
		t.Fatal("missing client_ca accepted")
	}

	p, _ := testPage(t, "0.0.0.0:9410", "", nil)
	p.certs = true
	mux := http.NewServeMux()
	p.Register(mux)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
	}
	url := "https://" + ln.Addr().String() + "/api/sessions"
	resp, err := client().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no client certificate: %d, want 401", resp.StatusCode)
	}
	if resp, err = client(issue("operator", false)).Get(url); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("client certificate of the CA: %d, want 200", resp.StatusCode)
	}
	// A certificate of another CA is refused (Go's client does not even
	// offer it, as the server names its CA; either way no 200).
	if resp, err := client(otherIssue("intruder", false)).Get(url); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("certificate of another CA: %d, want 401 or a failed handshake", resp.StatusCode)
		}
	}
}
