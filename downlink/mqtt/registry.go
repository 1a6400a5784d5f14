package mqtt

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"fmt"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// RegistryAuth authenticates devices against the endpoint registry. An
// MQTT endpoint logs in either with username = its PSK identity and
// password = its PSK text (what provisioning prints for a PSK endpoint), or
// with its site-CA certificate (CN = endpoint name). Endpoints of another
// protocol (CoAP) are refused.
type RegistryAuth struct {
	Registry *registry.Registry
}

// Password implements Authenticator (constant-time comparison).
func (a RegistryAuth) Password(username string, password []byte) (string, bool) {
	e, ok := a.Registry.ByPSKIdentity(username)
	want := sha256.Sum256(e.PSK)
	got := sha256.Sum256(password)
	match := subtle.ConstantTimeCompare(want[:], got[:]) == 1
	if !ok || !match || len(e.PSK) == 0 || e.Protocol != registry.MQTT {
		return "", false
	}
	return e.Name, true
}

// Certificate implements Authenticator.
func (a RegistryAuth) Certificate(cert *x509.Certificate) (string, bool) {
	ep, err := a.CheckCertificate(cert)
	return ep, err == nil
}

// CheckCertificate implements CertificateChecker: only the certificate
// recorded for the endpoint (its serial), not on the site CRL, logs in as
// it (registry.Registry.ByCert).
func (a RegistryAuth) CheckCertificate(cert *x509.Certificate) (string, error) {
	e, err := a.Registry.ByCert(cert)
	if err != nil {
		return "", err
	}
	if e.Protocol != registry.MQTT {
		return "", fmt.Errorf("mqtt: endpoint %q is not an MQTT endpoint", e.Name)
	}
	return e.Name, nil
}
