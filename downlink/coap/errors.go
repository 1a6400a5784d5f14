package coap

import "errors"

var (
	// ErrUnknownIdentity is returned to pion when a client offers a PSK
	// identity that no endpoint owns.
	ErrUnknownIdentity = errors.New("coap: unknown PSK identity")
	// ErrUnknownCN is returned when a verified client certificate's common
	// name belongs to no endpoint.
	ErrUnknownCN = errors.New("coap: certificate CN is not a registered endpoint")
	// ErrCertRefused is returned for a site-CA certificate that is not the
	// one recorded for its endpoint (replaced) or is on the site CRL.
	ErrCertRefused = errors.New("coap: certificate refused")
	// ErrWrongProtocol is returned when an endpoint registered for MQTT
	// tries DTLS/CoAP.
	ErrWrongProtocol = errors.New("coap: endpoint is not registered for coap")
	// ErrNoCredentials is returned by New without a Registry.
	ErrNoCredentials = errors.New("coap: Config.Registry is nil")
	// ErrNotConnected is returned when a request is sent to an endpoint with
	// no DTLS session.
	ErrNotConnected = errors.New("coap: endpoint has no DTLS session")
)
