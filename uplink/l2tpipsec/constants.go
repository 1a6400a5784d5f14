package l2tpipsec

import "time"

const (
	// L2TPPort is the UDP port L2TP runs on and IPsec protects
	// (RFC 2661 §8.1, RFC 3193 §4).
	L2TPPort = 1701
	// DefaultIKEPort and DefaultNATTPort are the gateway's IKE and NAT-T
	// ports (RFC 2408 §2.5.1, RFC 3948 §2.1).
	DefaultIKEPort  = 500
	DefaultNATTPort = 4500

	// DefaultSetupTimeout bounds a whole client set-up (IKE, L2TP, PPP)
	// when the caller's context has no deadline.
	DefaultSetupTimeout = 90 * time.Second
	// DefaultQuickModeTimeout is how long a client waits for its first IPsec
	// SA after phase 1 (IKE's own retransmissions give up after about a
	// minute with the defaults).
	DefaultQuickModeTimeout = 60 * time.Second
	// DefaultProbeAfter: on-demand LCP echo after 2 s of traffic sent and
	// nothing received (dead gateway noticed in ~8 s under traffic).
	DefaultProbeAfter = 2 * time.Second
	// CloseTimeout bounds a graceful client Close: PPP Terminate
	// (RFC 1661 §4.6: 2 × 3 s with the defaults) and the StopCCN
	// acknowledgement (RFC 2661 §5.7: up to ~30 s of retransmissions) are
	// not waited for longer when the peer has gone quiet.
	CloseTimeout = 5 * time.Second
	// rekeyGrace is how long the transport keeps an older inbound SA once
	// a newer pair is active (make-before-break); the same as IKE's
	// default grace, whose ChildDown for the old pair usually comes first.
	rekeyGrace = 30 * time.Second
	// tickInterval drives IKE timers and the DPD traffic note (RFC 3706
	// §5.5: DPD only when idle).
	tickInterval = time.Second
)

// Bounds on what one IPsec peer can hold on a Server (ServerConfig).
const (
	// DefaultMaxTunnelsPerPeer: stock clients use one tunnel; two leave
	// room for a reconnect racing the old tunnel's StopCCN.
	DefaultMaxTunnelsPerPeer = 2
	// DefaultUnauthTimeout closes a tunnel without an authenticated
	// session (PPP LCP and authentication take seconds).
	DefaultUnauthTimeout = 60 * time.Second
	// authHangupGrace is how long the StopCCN after a failed PPP login
	// may wait for its ack before the IKE SA is deleted.
	authHangupGrace = time.Second
)
