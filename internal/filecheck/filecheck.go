// Package filecheck is `--check-config`'s look at the files a
// configuration names: every certificate, key, CA, CRL and secret file is
// opened and parsed, a certificate is matched with its key and its CA,
// expiry and permissions (secrets owner-only) are checked, and every
// problem is collected so one run lists them all.
package filecheck

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/internal/secretfile"
)

// SoonExpiry is how close to its end a certificate is reported as a
// warning (30 days, the FleetgateCredentialExpiringSoon alert's window).
const SoonExpiry = 30 * 24 * time.Hour

// Problem is one finding about a referenced file.
type Problem struct {
	Key  string // configuration key path naming the file, e.g. pki.cert
	Line int    // line of that key, 0 when unknown
	Msg  string // "pki.cert: /etc/…/gw1.crt: …"
	// Warning problems (a certificate expiring soon) do not fail a check.
	Warning bool
}

// Checker collects problems; Now is the time expiry is judged at.
type Checker struct {
	Now      time.Time
	Problems []Problem
}

func (c *Checker) add(key string, line int, warn bool, format string, a ...any) {
	c.Problems = append(c.Problems, Problem{Key: key, Line: line, Warning: warn, Msg: key + ": " + fmt.Sprintf(format, a...)})
}

// Failed reports whether any problem is not a warning.
func (c *Checker) Failed() bool {
	for _, p := range c.Problems {
		if !p.Warning {
			return true
		}
	}
	return false
}

func (c *Checker) open(key string, line int, path, hint string) bool {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true
	case errors.Is(err, fs.ErrNotExist):
		if hint != "" {
			hint = " (" + hint + ")"
		}
		c.add(key, line, false, "%s: missing%s", path, hint)
	default:
		c.add(key, line, false, "%s: %v", path, err)
	}
	return false
}

// Secret checks a file holding a secret: present, owner-only, not empty.
func (c *Checker) Secret(key string, line int, path, hint string) {
	if !c.open(key, line, path, hint) {
		return
	}
	if _, err := secretfile.Read(path); err != nil {
		c.add(key, line, false, "%v", err)
	}
}

// Cert reads a PEM certificate and checks its validity period; nil when
// it is missing or unreadable (the problem is recorded).
func (c *Checker) Cert(key string, line int, path, hint string) *x509.Certificate {
	if !c.open(key, line, path, hint) {
		return nil
	}
	cert, err := pemfile.ReadCert(path)
	if err != nil {
		c.add(key, line, false, "%s: %v", path, err)
		return nil
	}
	switch {
	case c.Now.After(cert.NotAfter):
		c.add(key, line, false, "%s: certificate %q expired on %s", path, cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly))
	case c.Now.Before(cert.NotBefore):
		c.add(key, line, false, "%s: certificate %q is not valid before %s", path, cert.Subject.CommonName, cert.NotBefore.Format(time.DateOnly))
	case cert.NotAfter.Sub(c.Now) < SoonExpiry:
		c.add(key, line, true, "%s: certificate %q expires on %s (within 30 days)", path, cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly))
	}
	return cert
}

// Key reads a PEM private key and checks it is owner-only.
func (c *Checker) Key(key string, line int, path, hint string) crypto.Signer {
	if !c.open(key, line, path, hint) {
		return nil
	}
	if err := secretfile.Check(path); err != nil {
		c.add(key, line, false, "%v", err)
	}
	k, err := pemfile.ReadKey(path)
	if err != nil {
		c.add(key, line, false, "%s: %v", path, err)
		return nil
	}
	return k
}

// CRL reads a PEM or DER CRL and, when ca is known, checks its signature.
func (c *Checker) CRL(key string, line int, path, hint string, ca *x509.Certificate) {
	if !c.open(key, line, path, hint) {
		return
	}
	rl, err := pemfile.ReadCRL(path)
	if err != nil {
		c.add(key, line, false, "%s: %v", path, err)
		return
	}
	if ca != nil {
		if err := rl.CheckSignatureFrom(ca); err != nil {
			c.add(key, line, false, "%s: CRL not signed by the CA %q: %v", path, ca.Subject.CommonName, err)
		}
	}
	if !rl.NextUpdate.IsZero() && c.Now.After(rl.NextUpdate) {
		c.add(key, line, true, "%s: CRL past its next update (%s): re-sign it (gateway pki crl)", path, rl.NextUpdate.Format(time.DateOnly))
	}
}

// Match checks that cert and key belong together and, when ca is known,
// that ca signed cert.
func (c *Checker) Match(key string, line int, cert *x509.Certificate, k crypto.Signer, ca *x509.Certificate) {
	if cert != nil && k != nil {
		pub, err1 := x509.MarshalPKIXPublicKey(cert.PublicKey)
		priv, err2 := x509.MarshalPKIXPublicKey(k.Public())
		if err1 != nil || err2 != nil || !bytes.Equal(pub, priv) {
			c.add(key, line, false, "certificate %q and its key do not match (the key belongs to another certificate)", cert.Subject.CommonName)
		}
	}
	if cert != nil && ca != nil {
		if err := cert.CheckSignatureFrom(ca); err != nil {
			c.add(key, line, false, "certificate %q is not signed by the CA %q", cert.Subject.CommonName, ca.Subject.CommonName)
		}
	}
}
