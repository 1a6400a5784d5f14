package tunnel

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
	// CloseTimeout bounds a graceful client Close: PPP Terminate
	// (RFC 1661 §4.6: 2 × 3 s with the defaults) and the StopCCN
	// acknowledgement (RFC 2661 §5.7: up to ~30 s of retransmissions) are
	// not waited for longer when the peer has gone quiet.
	CloseTimeout = 5 * time.Second
	// outboundSwitchDelay is how long the initiator of a rekeying Quick
	// Mode keeps sending on the old SA after installing the new inbound
	// one. The responder installs the new pair only when it has processed
	// the third message (RFC 2409 §5.5); ESP on the new SPI sent at once
	// overtakes that message inside the responder (IKE is queued, ESP is
	// opened inline) and is dropped as an unknown SPI.
	outboundSwitchDelay = time.Second
	// settleDelay is how long the client lets the gateway catch up before
	// its first ESP packet (after Quick Mode: the responder installs the SA
	// only once it has processed the third message, while ESP overtakes
	// IKE inside it). Early PPP frames need no delay: l2tp sessions hold
	// them until PPP attaches (l2tp.MaxEarlyFrames).
	settleDelay = 50 * time.Millisecond
	// tickInterval drives IKE timers and the DPD traffic note (RFC 3706
	// §5.5: DPD only when idle).
	tickInterval = time.Second
)
