package registry

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// crlFile is the site CRL inside the CA directory, rewritten by Revoke.
const crlFile = "crl.pem"

// crlValidity is the NextUpdate of a site CRL: it changes only when an
// endpoint is revoked, so a long validity keeps consumers from treating
// it as stale.
const crlValidity = 365 * 24 * time.Hour

// CRLPath returns the site CRL's path (it may not exist yet).
func (ca *CA) CRLPath() string { return filepath.Join(ca.dir, crlFile) }

// Revoked returns the serials (lowercase hex, as SerialHex) on the site
// CRL; none when there is no CRL yet. A CRL not signed by the CA is an
// error.
func (ca *CA) Revoked() ([]string, error) {
	rl, err := ca.readCRL()
	if err != nil || rl == nil {
		return nil, err
	}
	out := make([]string, 0, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out, nil
}

func (ca *CA) readCRL() (*x509.RevocationList, error) {
	if ca.dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(ca.CRLPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device: site CRL: %w", err)
	}
	rl, err := pemfile.ParseCRL(b)
	if err != nil {
		return nil, fmt.Errorf("device: site CRL %s: %w", ca.CRLPath(), err)
	}
	if err := rl.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("device: site CRL %s is not signed by the site CA: %w", ca.CRLPath(), err)
	}
	return rl, nil
}

// Revoke adds a certificate serial (lowercase hex) to the site CRL and
// rewrites it (PEM, signed by the site CA, CRL number incremented), so
// that anyone holding the site CA (devices, the bridge on reload) can
// refuse the certificate. It returns the new CRL.
func (ca *CA) Revoke(serialHex string, now time.Time) (*x509.RevocationList, error) {
	sn, ok := new(big.Int).SetString(serialHex, 16)
	if !ok || sn.Sign() <= 0 {
		return nil, fmt.Errorf("device: revoke: bad serial %q", serialHex)
	}
	old, err := ca.readCRL()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(crlValidity)}
	if old != nil {
		tmpl.RevokedCertificateEntries = old.RevokedCertificateEntries
		if old.Number != nil {
			tmpl.Number = new(big.Int).Add(old.Number, big.NewInt(1))
		}
	}
	listed := false
	for _, e := range tmpl.RevokedCertificateEntries {
		listed = listed || e.SerialNumber.Cmp(sn) == 0
	}
	if !listed {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("device: site CRL: %w", err)
	}
	if err := writeFileAtomic(ca.CRLPath(), pemfile.Encode(pemfile.TypeCRL, der)); err != nil {
		return nil, err
	}
	return x509.ParseRevocationList(der)
}
