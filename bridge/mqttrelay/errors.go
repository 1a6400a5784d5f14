package mqttrelay

import "errors"

// Errors returned by the relay.
var (
	// ErrConfig means a required Config field is missing or invalid.
	ErrConfig = errors.New("mqttrelay: invalid config")
	// ErrUnknownEndpoint means the endpoint has no VPN address.
	ErrUnknownEndpoint = errors.New("mqttrelay: endpoint has no address")
	// ErrClosed means the relay was closed.
	ErrClosed = errors.New("mqttrelay: closed")
	// ErrMalformed means the central broker sent a malformed MQTT stream.
	ErrMalformed = errors.New("mqttrelay: malformed MQTT stream from central broker")
)
