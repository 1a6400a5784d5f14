package pki

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// Verifier checks peer certificates against the CA and its CRL. The IKE
// responder calls Verify after the signature check on a Main Mode ID.
// It is immutable; reload makes a new one.
type Verifier struct {
	roots   *x509.CertPool
	ca      *x509.Certificate
	revoked map[string]bool // serial (hex) -> revoked
	// CRLNextUpdate is when the CRL should be refreshed.
	CRLNextUpdate time.Time
}

// NewVerifier builds a Verifier from a CA certificate and an optional CRL.
// The CRL must be signed by the CA.
func NewVerifier(ca *x509.Certificate, crl *x509.RevocationList) (*Verifier, error) {
	v := &Verifier{roots: x509.NewCertPool(), ca: ca, revoked: map[string]bool{}}
	v.roots.AddCert(ca)
	if crl != nil {
		if err := crl.CheckSignatureFrom(ca); err != nil {
			return nil, fmt.Errorf("pki: CRL not signed by the CA: %w", err)
		}
		for _, e := range crl.RevokedCertificateEntries {
			v.revoked[e.SerialNumber.Text(16)] = true
		}
		v.CRLNextUpdate = crl.NextUpdate
	}
	return v, nil
}

// LoadVerifier reads the CA certificate and, if crlPath is not empty, the CRL.
func LoadVerifier(caPath, crlPath string) (*Verifier, error) {
	ca, err := pemfile.ReadCert(caPath)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	var crl *x509.RevocationList
	if crlPath != "" {
		if crl, err = pemfile.ReadCRL(crlPath); err != nil {
			return nil, fmt.Errorf("pki: CRL: %w", err)
		}
	}
	return NewVerifier(ca, crl)
}

// Verify checks that leaf chains to the CA at time now (zero: current
// time), is not revoked, and returns the identities it may be matched by
// (CN, DNS, IP and email SANs).
func (v *Verifier) Verify(leaf *x509.Certificate, intermediates []*x509.Certificate, now time.Time) ([]string, error) {
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: v.roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if v.revoked[leaf.SerialNumber.Text(16)] {
		return nil, ErrRevoked
	}
	return Names(leaf), nil
}

// Pool returns a pool holding the CA (for libraries that verify chains
// themselves, e.g. ike.Config.CAs).
func (v *Verifier) Pool() *x509.CertPool { return v.roots }

// CheckRevoked returns ErrRevoked if leaf is on the CRL.
func (v *Verifier) CheckRevoked(leaf *x509.Certificate) error {
	if v.revoked[leaf.SerialNumber.Text(16)] {
		return ErrRevoked
	}
	return nil
}

// Names returns the identities a certificate may be matched by: its CN and
// DNS, IP and email SANs.
func Names(c *x509.Certificate) []string {
	ids := []string{c.Subject.CommonName}
	ids = append(ids, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		ids = append(ids, ip.String())
	}
	return append(ids, c.EmailAddresses...)
}
