package registry

import "errors"

var (
	// ErrExists is returned when adding an endpoint whose name, PSK identity
	// or certificate CN is already registered.
	ErrExists = errors.New("device: endpoint already exists")
	// ErrNotFound is returned for an unknown endpoint name.
	ErrNotFound = errors.New("device: no such endpoint")
	// ErrPrefixFull is returned when no free address is left in the site prefix.
	ErrPrefixFull = errors.New("device: no free address in the site prefix")
	// ErrBadName is returned for an empty or malformed endpoint name.
	ErrBadName = errors.New("device: bad endpoint name")
	// ErrBadProtocol is returned for a protocol other than coap or mqtt.
	ErrBadProtocol = errors.New("device: protocol must be coap or mqtt")
	// ErrNoCredentials is returned for an endpoint with neither a PSK nor a
	// certificate CN.
	ErrNoCredentials = errors.New("device: endpoint has neither PSK nor certificate CN")
	// ErrBadState is returned when the state file does not parse or is
	// inconsistent (duplicate names, identities or addresses; addresses
	// outside the prefix).
	ErrBadState = errors.New("device: bad state file")
	// ErrCertReplaced is returned for a certificate of the site CA whose CN
	// names an endpoint that was issued another certificate since.
	ErrCertReplaced = errors.New("device: certificate is not the one issued to the endpoint (replaced)")
	// ErrCertRevoked is returned for a certificate on the site CRL.
	ErrCertRevoked = errors.New("device: certificate revoked")
	// ErrBadPrefix is returned for a site prefix that is not IPv4 or too small.
	ErrBadPrefix = errors.New("device: site prefix must be IPv4 with at least 4 addresses")
)
