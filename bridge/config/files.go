package config

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetgate/fleetgate/internal/filecheck"
)

// Check is `bridge --check-config`: Load's validation plus a look at every
// file the configuration names (uplink.psk_file and ppp_password_file,
// relative to the configuration; uplink.cert, key, ca, crl and
// mqtt.central_ca): opened and parsed, owner-only secrets, certificate
// matched with key and CA, expiry. Every problem is listed in one run;
// warnings (expiring within 30 days, a stale CRL) do not fail the check.
func Check(path string, now time.Time) (*Config, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		_, err = Load(path) // the same error, located in path
		return nil, nil, err
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root) // Parse decoded it
	fc := &filecheck.Checker{Now: now}
	rel := func(f string) string {
		if filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(filepath.Dir(path), f)
	}
	u := c.Uplink
	if u.Mode == "l2tp-ipsec" {
		if u.PSKFile != "" {
			fc.Secret("uplink.psk_file", lineOf(&root, "uplink.psk_file"), rel(u.PSKFile), "the site's IKE pre-shared key, from `gateway client-config SITE --format bridge`")
		}
		if u.PPPPasswordFile != "" {
			fc.Secret("uplink.ppp_password_file", lineOf(&root, "uplink.ppp_password_file"), rel(u.PPPPasswordFile), "the site's PPP password")
		}
		var ca *x509.Certificate
		if u.CA != "" {
			ca = fc.Cert("uplink.ca", lineOf(&root, "uplink.ca"), u.CA, "the fleet CA certificate, ca.crt of `gateway pki`")
		}
		if u.Cert != "" || u.Key != "" {
			hint := "`gateway pki issue SITE --kind site` writes certs/SITE.crt and .key"
			cert := fc.Cert("uplink.cert", lineOf(&root, "uplink.cert"), u.Cert, hint)
			key := fc.Key("uplink.key", lineOf(&root, "uplink.key"), u.Key, hint)
			fc.Match("uplink.cert", lineOf(&root, "uplink.cert"), cert, key, ca)
		}
		if u.CRL != "" {
			fc.CRL("uplink.crl", lineOf(&root, "uplink.crl"), u.CRL, "`gateway pki crl` writes crl.pem", ca)
		}
	}
	if c.MQTT.CentralCA != "" {
		fc.Cert("mqtt.central_ca", lineOf(&root, "mqtt.central_ca"), c.MQTT.CentralCA, "the central broker's CA certificate")
	}
	var warnings []string
	var es Errors
	for _, p := range fc.Problems {
		if p.Warning {
			warnings = append(warnings, fmt.Sprintf("%s:%d: warning: %s", path, p.Line, p.Msg))
			continue
		}
		es = append(es, &Error{Line: p.Line, Msg: p.Msg})
	}
	if len(es) > 0 {
		return nil, warnings, es.in(path)
	}
	c, err = Load(path) // inline secrets in a readable file, and the rest
	return c, warnings, err
}
