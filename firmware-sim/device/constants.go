package device

import "time"

// CoAP transmission defaults (RFC 7252 §4.8: ACK_TIMEOUT 2 s,
// MAX_RETRANSMIT 4, ACK_RANDOM_FACTOR 1.5).
const (
	DefaultAckTimeout    = 2 * time.Second
	DefaultMaxRetransmit = 4
	ackRandomFactor      = 1.5
	// failuresBeforeReconnect: consecutive unacknowledged exchanges after
	// which the firmware drops the session and handshakes again.
	failuresBeforeReconnect = 2
	defaultHandshakeTimeout = 20 * time.Second
)
