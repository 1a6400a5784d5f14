// Package admission paces new IKE Main Modes: a global token bucket and
// one per outer source address. The IKE responder calls Allow with the
// source of a Main Mode once its third message has proven that address
// (stateless cookie, RFC 2408 §2.5.3) and before any Diffie-Hellman work,
// so a fleet reconnecting after a gateway restart (or a flood from one
// source) is spread out instead of melting the CPU; established SAs are not
// affected. Refused initiators simply retransmit (RFC 2409 §5 leaves the
// responder free to drop), which is what spreads the load.
package admission

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/internal/srcaddr"
	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Decision is the result of Allow.
type Decision uint8

// Decisions.
const (
	Admit        Decision = iota // go ahead
	RejectSource                 // this source exceeded its rate
	RejectGlobal                 // the gateway as a whole is at its rate
	numDecisions
)

// String names the decision as used in metrics and logs.
func (d Decision) String() string {
	switch d {
	case Admit:
		return "admit"
	case RejectSource:
		return "source_rate"
	case RejectGlobal:
		return "global_rate"
	}
	return "unknown"
}

// Config configures a Limiter. Rates are new Main Modes per second.
type Config struct {
	GlobalRate     float64
	GlobalBurst    int
	PerSourceRate  float64
	PerSourceBurst int
	// MaxSources bounds the per-source table (default 65536); when full,
	// idle sources are evicted, and if none is idle the new source shares
	// the global bucket only.
	MaxSources int
	// Clock (default clock.System).
	Clock clock.Clock
}

// Stats counts decisions.
type Stats struct {
	Admitted, RejectedSource, RejectedGlobal atomic.Uint64
}

// Limiter is safe for concurrent use.
type Limiter struct {
	cfg    Config
	global *rate.Limiter
	mu     sync.Mutex
	srcs   map[netip.Addr]*source
	// Stats are the limiter's counters.
	Stats Stats
}

type source struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 65536
	}
	if cfg.GlobalBurst < 1 {
		cfg.GlobalBurst = 1
	}
	if cfg.PerSourceBurst < 1 {
		cfg.PerSourceBurst = 1
	}
	return &Limiter{cfg: cfg, global: rate.NewLimiter(rate.Limit(cfg.GlobalRate), cfg.GlobalBurst), srcs: map[netip.Addr]*source{}}
}

// idleAfter is how long a source must be quiet before its bucket is full
// again, after which forgetting it changes nothing.
func (l *Limiter) idleAfter() time.Duration {
	if l.cfg.PerSourceRate <= 0 {
		return time.Hour
	}
	return time.Duration(float64(l.cfg.PerSourceBurst)/l.cfg.PerSourceRate*float64(time.Second)) + time.Second
}

// Allow decides whether a new Main Mode from src may proceed.
func (l *Limiter) Allow(src netip.Addr) Decision {
	now := l.cfg.Clock.Now()
	src = srcaddr.Key(src) // an IPv6 source counts as its /64
	l.mu.Lock()
	s := l.srcs[src]
	if s == nil {
		if len(l.srcs) >= l.cfg.MaxSources {
			idle := l.idleAfter()
			for a, o := range l.srcs {
				if now.Sub(o.seen) > idle {
					delete(l.srcs, a)
				}
			}
		}
		if len(l.srcs) < l.cfg.MaxSources {
			s = &source{lim: rate.NewLimiter(rate.Limit(l.cfg.PerSourceRate), l.cfg.PerSourceBurst)}
			l.srcs[src] = s
		}
	}
	if s != nil {
		s.seen = now
		if !s.lim.AllowN(now, 1) {
			l.mu.Unlock()
			l.Stats.RejectedSource.Add(1)
			return RejectSource
		}
	}
	l.mu.Unlock()
	if !l.global.AllowN(now, 1) {
		l.Stats.RejectedGlobal.Add(1)
		return RejectGlobal
	}
	l.Stats.Admitted.Add(1)
	return Admit
}

// SetRates changes the rates (on reload); per-source buckets restart.
func (l *Limiter) SetRates(globalRate float64, globalBurst int, perSourceRate float64, perSourceBurst int) {
	l.global.SetLimit(rate.Limit(globalRate))
	l.global.SetBurst(globalBurst)
	l.mu.Lock()
	l.cfg.PerSourceRate, l.cfg.PerSourceBurst = perSourceRate, perSourceBurst
	l.srcs = map[netip.Addr]*source{}
	l.mu.Unlock()
}

// Sources is the number of tracked sources.
func (l *Limiter) Sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.srcs)
}
