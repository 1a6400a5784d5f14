package l2tp

import (
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Stats counts L2TP events. All fields are atomic counters; one Stats may
// be shared by many endpoints (published as l2tp_<noun>_<verb>_total).
type Stats struct {
	// PeersByKind counts peer SCCRQ/SCCRPs by the implementation their
	// Vendor-Name/Host-Name AVPs name (peerid.Classify).
	PeersByKind         peerid.Counts
	TunnelsEstablished  atomic.Uint64 // tunnels that reached established
	TunnelsClosed       atomic.Uint64 // tunnels torn down, for any reason
	TunnelsTimedOut     atomic.Uint64 // tunnels closed because the peer stopped acking or setup expired
	SessionsEstablished atomic.Uint64 // sessions that reached established
	SessionsClosed      atomic.Uint64 // sessions torn down
	ControlSent         atomic.Uint64 // control messages sent (first transmissions, ZLBs included)
	ControlReceived     atomic.Uint64 // control messages accepted in sequence
	ControlRetransmits  atomic.Uint64 // control messages retransmitted
	ControlDuplicates   atomic.Uint64 // control messages received again (re-acked, dropped)
	ControlOutOfOrder   atomic.Uint64 // control messages buffered ahead of Nr
	ControlOutOfWindow  atomic.Uint64 // control messages dropped: too far ahead
	ZLBSent             atomic.Uint64 // explicit ZLB acknowledgements sent
	HellosSent          atomic.Uint64 // HELLO keepalives sent
	MalformedDropped    atomic.Uint64 // datagrams that failed to parse
	UnknownTunnel       atomic.Uint64 // datagrams for a tunnel ID we do not have
	WrongPeer           atomic.Uint64 // datagrams whose transport address does not own the tunnel
	UnknownSession      atomic.Uint64 // data for a session ID we do not have
	UnknownMandatoryAVP atomic.Uint64 // messages with an unknown mandatory AVP (teardown)
	UnexpectedMessage   atomic.Uint64 // messages not valid in the current state
	AuthFailures        atomic.Uint64 // tunnel authentication failures
	SCCRQRefused        atomic.Uint64 // SCCRQs refused by the half-open or tunnel caps
	InboxOverflow       atomic.Uint64 // control datagrams dropped: tunnel queue full
	DataSent            atomic.Uint64 // data messages sent
	DataReceived        atomic.Uint64 // data messages delivered to a frame handler
	DataDropped         atomic.Uint64 // data messages dropped (session not up, early queue full)
	DataQueued          atomic.Uint64 // data messages held until the frame handler was set
	WENReceived         atomic.Uint64 // WAN-Error-Notify messages accepted
	SLIReceived         atomic.Uint64 // Set-Link-Info messages accepted
}

// rateLimitedLog emits at most one line per interval per limiter and
// reports how many were suppressed in between (cf. gVisor warnRateLimiter).
type rateLimitedLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimitedLog) warn(log *slog.Logger, now time.Time, msg string, args ...any) {
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < time.Second {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}
