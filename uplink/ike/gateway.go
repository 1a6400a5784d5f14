package ike

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// GatewayPolicy is what an initiator demands of the responder's
// certificate beyond a chain to Config.CAs: that it names the gateway we
// meant to dial, is a gateway certificate, and is not revoked. Without it
// any certificate of the CA (another site's, a revoked one) would pass as
// "the gateway".
type GatewayPolicy struct {
	// ID is the gateway's name: one of the certificate's subjectAltNames
	// (DNS name, IP address or e-mail) must equal it, as a TLS client
	// checks a server name. The subject CN does not count. Required.
	ID string
	// Usage is the extended key usage the leaf must carry and every CA in
	// its chain must permit; default x509.ExtKeyUsageServerAuth, which
	// `gateway pki` puts on gateway certificates and never on site or
	// device certificates (Windows and macOS clients expect it too).
	Usage x509.ExtKeyUsage
	// CRL, when set, returns the current CRL of the CA that issued the
	// gateway's certificate (nil: none loaded). It is called on every phase
	// 1 under the engine's lock, so it must not block (return an atomically
	// published value). A CRL that is not signed by the leaf's issuer
	// refuses the gateway (fail closed); an outdated one is still honoured.
	CRL func() *x509.RevocationList
}

// checkGateway applies cfg.Gateway to the responder's verified leaf and
// chain (leaf first, root last). It is a no-op on the responder side and
// without a policy.
func (sa *ikeSA) checkGateway(leaf *x509.Certificate, chain []*x509.Certificate) error {
	p := sa.e.cfg.Gateway
	if p == nil || sa.role != RoleInitiator {
		return nil
	}
	if err := p.Check(leaf, chain, sa.e.cfg.Clock.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCert, err)
	}
	return nil
}

// Check reports why leaf (verified into chain, leaf first, root last) is
// not the gateway; the error wraps ErrNotGateway.
func (p *GatewayPolicy) Check(leaf *x509.Certificate, chain []*x509.Certificate, now time.Time) error {
	if p.ID == "" {
		return fmt.Errorf("%w: no gateway ID configured", ErrNotGateway)
	}
	if !hasSAN(leaf, p.ID) {
		return fmt.Errorf("%w: certificate %q (serial %x) does not name %q in its subjectAltName",
			ErrNotGateway, leaf.Subject.CommonName, leaf.SerialNumber, p.ID)
	}
	usage := p.Usage
	if usage == 0 {
		usage = x509.ExtKeyUsageServerAuth
	}
	// Re-verify the same chain with the usage: x509 checks the leaf and
	// that every CA above it permits the usage.
	if len(chain) == 0 {
		chain = []*x509.Certificate{leaf}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	if len(chain) > 2 {
		for _, c := range chain[1 : len(chain)-1] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("%w: certificate %q (serial %x) is not a gateway certificate (extended key usage): %v",
			ErrNotGateway, leaf.Subject.CommonName, leaf.SerialNumber, err)
	}
	if p.CRL == nil {
		return nil
	}
	crl := p.CRL()
	if crl == nil {
		return nil
	}
	issuer := chain[len(chain)-1]
	if len(chain) > 1 {
		issuer = chain[1]
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%w: the CRL is not signed by %q, the gateway certificate's issuer: %v",
			ErrNotGateway, issuer.Subject.CommonName, err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			return fmt.Errorf("%w: certificate %q (serial %x) is revoked (CRL number %v)",
				ErrNotGateway, leaf.Subject.CommonName, leaf.SerialNumber, crl.Number)
		}
	}
	return nil
}

// hasSAN reports whether id is one of c's DNS, IP or e-mail
// subjectAltNames (DNS and e-mail compared case-insensitively).
func hasSAN(c *x509.Certificate, id string) bool {
	if a, err := netip.ParseAddr(id); err == nil {
		for _, ip := range c.IPAddresses {
			if b, ok := netip.AddrFromSlice(ip); ok && b.Unmap() == a.Unmap() {
				return true
			}
		}
		return false
	}
	for _, n := range c.DNSNames {
		if strings.EqualFold(n, id) {
			return true
		}
	}
	for _, n := range c.EmailAddresses {
		if strings.EqualFold(n, id) {
			return true
		}
	}
	return false
}
