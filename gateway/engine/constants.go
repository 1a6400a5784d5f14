package engine

import "time"

const (
	// isakmpHeaderLen is the fixed ISAKMP header (RFC 2408 §3.1).
	isakmpHeaderLen = 28
	// exchIdentityProtection and exchAggressive are the phase 1 exchange
	// types (RFC 2408 §4.4, §4.7) whose first message starts DH work.
	exchIdentityProtection = 2
	exchAggressive         = 4
	// nonESPMarkerLen is the four zero bytes in front of IKE on the NAT-T
	// port (RFC 3948 §2.2).
	nonESPMarkerLen = 4

	// admittedMax bounds the table of initiator cookies already admitted,
	// so a retransmitted first message is not charged twice.
	admittedMax = 4096
	// statsInterval is how often IKE counters are turned into gateway
	// metrics (set-up failures by phase, rekeys).
	statsInterval = time.Second
	// socketBuffer is asked for on the NAT-T socket (as esp.Transport does
	// for sockets it can see): bursts of ESP must not overflow the kernel
	// queue while the reader catches up.
	socketBuffer = 4 << 20
	// setupWindow is how long a first Main Mode message waits to be
	// matched with a session reaching IPCP, for the set-up time histogram;
	// older ones (a phase 1 rekey, an abandoned attempt) are forgotten.
	setupWindow = 2 * time.Minute
	// inboxMax bounds the packets held per session between the client's
	// IPCP opening and the gateway registering it (normally one or two:
	// the window is a goroutine switch wide).
	inboxMax = 32
)
