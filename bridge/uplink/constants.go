package uplink

import "time"

// Reconnection defaults. Exponential backoff with full jitter: a fleet of
// sites disconnected at once by a gateway restart spreads its reconnects
// over the whole window instead of arriving in lock-step.
const (
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 2 * time.Minute
	DefaultStableAfter = time.Minute
	DefaultCooldown    = time.Minute
	// DefaultAnswerTimeout: with several gateways, an attempt to one that
	// sent nothing for 10 s (IKE's first retransmissions at 2 s and 6 s
	// unanswered) tries the next (failover.go).
	DefaultAnswerTimeout = 10 * time.Second
)
