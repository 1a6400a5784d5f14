package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/internal/filecheck"
)

// Check is `gateway --check-config`: Load's validation plus a look at
// every file the configuration names (secret files, the CA, the gateway's
// certificate and key, the CRL): opened and parsed, certificate matched
// with key and CA, expiry and permissions checked. Every problem is in
// the returned Errors, so one run lists them all; warnings (a certificate
// expiring within 30 days, a stale CRL) do not fail the check.
func Check(path string, now time.Time) (cfg *Config, warnings []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	var kept *Config
	c, err := parseKeep(path, b, true, &kept)
	var es Errors
	if err != nil {
		if kept == nil || !errorsAs(err, &es) {
			return nil, nil, err // not even decoded
		}
		c = kept
	}
	// The secret files were read by the validation (its errors are in
	// es); look at the PKI files, which only the engine opens at start.
	fc := &filecheck.Checker{Now: now}
	p := c.PKI
	dir := p.Dir
	hint := func(what string) string {
		return fmt.Sprintf("%s; for a PSK-only gateway without a PKI remove pki.cert and pki.key", what)
	}
	var certAuth bool
	for _, id := range c.Identities {
		certAuth = certAuth || id.Auth == AuthCert
	}
	var caHint string
	if certAuth {
		caHint = fmt.Sprintf("create it with: gateway pki init --dir %s; certificate identities need it", dir)
	} else {
		caHint = fmt.Sprintf("create it with: gateway pki init --dir %s", dir)
	}
	var ca *x509.Certificate
	if p.CA != "" {
		ca = fc.Cert("pki.ca", c.line("pki", "ca"), p.CA, caHint)
	}
	if p.Cert != "" || p.Key != "" {
		name := trimExt(filepath.Base(p.Cert))
		issue := hint(fmt.Sprintf("create it with: gateway pki issue %s --kind gateway --dir %s --san YOUR.GATEWAY.NAME", name, dir))
		cert := fc.Cert("pki.cert", c.line("pki", "cert"), p.Cert, issue)
		key := fc.Key("pki.key", c.line("pki", "key"), p.Key, issue)
		fc.Match("pki.cert", c.line("pki", "cert"), cert, key, ca)
	}
	if p.CRL != "" {
		fc.CRL("pki.crl", c.line("pki", "crl"), p.CRL, fmt.Sprintf("create it with: gateway pki crl --dir %s", dir), ca)
	}
	for _, pr := range fc.Problems {
		if pr.Warning {
			warnings = append(warnings, fmt.Sprintf("%s:%d: warning: %s", path, pr.Line, pr.Msg))
			continue
		}
		es = append(es, &Error{File: path, Line: pr.Line, Msg: pr.Msg})
	}
	if len(es) > 0 {
		return nil, warnings, es
	}
	return c, warnings, nil
}

func errorsAs(err error, es *Errors) bool { return errors.As(err, es) }

func trimExt(s string) string { return s[:len(s)-len(filepath.Ext(s))] }
