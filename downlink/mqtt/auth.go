package mqtt

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
)

// Authenticator maps a device's credentials to its endpoint name. The
// endpoint registry (downlink/registry) or a static table implements it.
type Authenticator interface {
	// Password returns the endpoint for an MQTT username and password.
	Password(username string, password []byte) (endpoint string, ok bool)
	// Certificate returns the endpoint for a client certificate that the
	// TLS layer already verified against the site CA (typically by CN).
	Certificate(cert *x509.Certificate) (endpoint string, ok bool)
}

// CertificateChecker is an Authenticator that can say why a verified
// certificate does not log in (replaced, revoked, unknown CN); the broker
// logs that reason and counts it in Stats.CertRefused.
type CertificateChecker interface {
	CheckCertificate(cert *x509.Certificate) (endpoint string, err error)
}

// StaticAuth is an Authenticator over fixed tables, for small sites and
// tests. Usernames are endpoint names.
type StaticAuth struct {
	// Passwords maps endpoint name to its MQTT password.
	Passwords map[string]string
	// CertEndpoints lists endpoint names allowed to log in with a site-CA
	// certificate whose Subject CN is that name.
	CertEndpoints map[string]bool
}

// Password implements Authenticator with a constant-time comparison.
func (s StaticAuth) Password(username string, password []byte) (string, bool) {
	want, ok := s.Passwords[username]
	a := sha256.Sum256([]byte(want))
	b := sha256.Sum256(password)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 || !ok {
		return "", false
	}
	return username, true
}

// Certificate implements Authenticator: CN must be a listed endpoint.
func (s StaticAuth) Certificate(cert *x509.Certificate) (string, bool) {
	cn := cert.Subject.CommonName
	if s.CertEndpoints[cn] {
		return cn, true
	}
	return "", false
}

// validEndpointName reports whether an endpoint name can be one topic level.
func validEndpointName(n string) bool {
	return n != "" && len(n) <= 255 && validTopicName(n) && !containsSlash(n)
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}
