package coap

import (
	"time"

	"github.com/pion/dtls/v3"
)

// DefaultPort is the CoAP over DTLS port (RFC 7252 section 12.7, "coaps").
const DefaultPort = 5684

// DefaultSuites are offered in this order; pion picks in the client's
// order among those allowed. CCM_8 are RFC 7252 section 9.1.3's mandatory
// suites (all tinydtls devices offer); GCM is what libcoap and mbedTLS
// prefer.
var DefaultSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_CCM_8,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
}

const (
	// socketBuffer is the DTLS socket's receive buffer (SO_RCVBUF).
	socketBuffer = 4 << 20
	// cidLen is the length of the Connection IDs the server asks peers to
	// send (RFC 9146 section 3); 8 bytes is pion's RandomCIDGenerator size
	// used in its examples and enough against collisions for 10k endpoints.
	cidLen = 8
	// DefaultFlightInterval is the initial handshake retransmission timer.
	// RFC 6347 section 4.2.4.1 recommends 1 s doubling up to 60 s; radio
	// links with duty cycles need the full doubling, which pion does.
	DefaultFlightInterval = time.Second
	// DefaultHandshakeTimeout bounds a whole handshake (lossy radio: several
	// doubled flights).
	DefaultHandshakeTimeout = 45 * time.Second
	// DefaultIdleTimeout closes sessions not heard from for this long. CID
	// (RFC 9146) makes long idle sessions useful for sleepy devices.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultMaxMessageSize bounds CoAP messages (after block-wise
	// reassembly the transfer may be larger); 1152 is RFC 7252 section 4.6's
	// recommended upper bound for a message in one datagram, doubled for
	// headroom.
	DefaultMaxMessageSize = 2304
	// DefaultMaxPendingHandshakes caps handshakes in progress after a valid
	// cookie: enough for a whole site's fleet reconnecting at once (the
	// accept backlog admits 128 at a time), small next to memory (≈ 50 KB
	// each with ECDSA).
	DefaultMaxPendingHandshakes = 512
	// DefaultMaxPendingPerSource caps them per source IP: a few devices
	// behind one NAT may handshake at once; one address cannot take the
	// table.
	DefaultMaxPendingPerSource = 8
	// DefaultPendingTimeout closes a handshake not authenticated by then:
	// four lost flights at 1 s doubling (1+2+4+8 s) still fit.
	DefaultPendingTimeout = 20 * time.Second
	// DefaultMaxBlockTransfers bounds a session's block-wise transfers in
	// reassembly: a device uploads one or two bodies at a time.
	DefaultMaxBlockTransfers = 16
	// DefaultParkAfter parks a session idle that long (park.go): longer
	// than RFC 7252's MAX_TRANSMIT_SPAN (45 s), so no retransmission of a
	// CON the bridge already answered can reach the resumed session (whose
	// go-coap dedup cache is new).
	DefaultParkAfter = 60 * time.Second
	// DefaultSaveInterval is how often the session state file is written
	// besides at Close (for a bridge that is killed).
	DefaultSaveInterval = 5 * time.Minute
	// DefaultMaxSavedSessions bounds the session state file: a large site's
	// fleet (≈ 1 KB each on disk).
	DefaultMaxSavedSessions = 200000
	// DefaultRate and DefaultBurst are the per-endpoint request limits.
	DefaultRate  = 20.0
	DefaultBurst = 40
)
