package mqtt

import "errors"

// Errors returned by the broker.
var (
	// ErrNoTLS means Config.TLS is nil while the TLS listener is enabled.
	ErrNoTLS = errors.New("mqtt: TLS listener needs Config.TLS")
	// ErrNoAuth means Config.Auth is nil.
	ErrNoAuth = errors.New("mqtt: Config.Auth is required")
	// ErrTopic means a topic or filter is invalid or outside the endpoint's
	// mapping.
	ErrTopic = errors.New("mqtt: topic outside the endpoint's mapping")
	// ErrBadFilter means a configured ACL filter is not a valid MQTT filter.
	ErrBadFilter = errors.New("mqtt: invalid ACL filter")
	// ErrClosed means the broker was closed.
	ErrClosed = errors.New("mqtt: broker closed")
)
