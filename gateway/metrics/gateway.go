package metrics

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Set-up phases, for SetupFailed.
const (
	PhaseAdmission = "admission" // Main Mode pacing refused it
	PhaseIKEMain   = "ike_main"
	PhaseIKEQuick  = "ike_quick"
	PhaseL2TP      = "l2tp"
	PhaseLCP       = "ppp_lcp"
	PhaseAuth      = "ppp_auth"
	PhaseIPCP      = "ppp_ipcp"
	PhaseSession   = "session" // session table refused it (address/route conflict, relogin)
)

// labeled is a set of counters keyed by a label tuple.
type labeled struct {
	mu sync.Mutex
	m  map[string]*atomic.Uint64
}

func (l *labeled) inc(key string) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*atomic.Uint64{}
	}
	c := l.m[key]
	if c == nil {
		c = new(atomic.Uint64)
		l.m[key] = c
	}
	l.mu.Unlock()
	c.Add(1)
}

func (l *labeled) each(fn func(key string, v uint64)) {
	l.mu.Lock()
	keys := make([]string, 0, len(l.m))
	for k := range l.m {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		l.mu.Lock()
		v := l.m[k].Load()
		l.mu.Unlock()
		fn(k, v)
	}
}

// Gateway holds the session-level counters the session engine reports
// through its methods. Safe for concurrent use.
type Gateway struct {
	// Now is the clock for the reconnect window (default time.Now).
	Now func() time.Time

	setupsOK     labeled // identity
	setupsFailed labeled // phase \x00 reason
	rekeys       labeled // kind (ike, esp)
	dpdFail      labeled // identity
	lcpFail      labeled // identity
	reconnects   labeled // identity (total)

	mu      sync.Mutex
	recent  map[string][]time.Time // identity -> reconnect times within the last hour
	expiry  []Expiry
	extraMu sync.Mutex
}

// Expiry is a credential end date exported as a gauge.
type Expiry struct {
	Name, Type string
	NotAfter   time.Time
}

func (g *Gateway) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// SetupOK counts an established session.
func (g *Gateway) SetupOK(identity string) { g.setupsOK.inc(identity) }

// SetupFailed counts a failed set-up in a phase with a short reason
// ("no_proposal_chosen", "auth_failed", "timeout", ...).
func (g *Gateway) SetupFailed(phase, reason string) { g.setupsFailed.inc(phase + "\x00" + reason) }

// Rekey counts a completed rekey of kind "ike" or "esp".
func (g *Gateway) Rekey(kind string) { g.rekeys.inc(kind) }

// DPDFailure counts a peer declared dead by DPD (RFC 3706).
func (g *Gateway) DPDFailure(identity string) { g.dpdFail.inc(identity) }

// LCPEchoFailure counts a link declared dead by LCP echo (RFC 1661 §5.8).
func (g *Gateway) LCPEchoFailure(identity string) { g.lcpFail.inc(identity) }

// Reconnect records that identity established a session while it had one
// before (replacement or reconnect after loss).
func (g *Gateway) Reconnect(identity string) {
	g.reconnects.inc(identity)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.recent == nil {
		g.recent = map[string][]time.Time{}
	}
	g.recent[identity] = append(prune(g.recent[identity], now), now)
}

func prune(ts []time.Time, now time.Time) []time.Time {
	cut := now.Add(-time.Hour)
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	return ts[i:]
}

// ReconnectsLastHour returns identity's reconnects within the last hour.
func (g *Gateway) ReconnectsLastHour(identity string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := prune(g.recent[identity], g.now())
	g.recent[identity] = ts
	return len(ts)
}

// SetExpiries replaces the credential expiry list (on start and reload).
func (g *Gateway) SetExpiries(e []Expiry) {
	g.extraMu.Lock()
	defer g.extraMu.Unlock()
	g.expiry = append([]Expiry(nil), e...)
}

// Collect exports the gateway counters.
func (g *Gateway) Collect(w *Writer) {
	g.setupsOK.each(func(k string, v uint64) {
		w.Add("fleetgate_session_setups_total", Counter, "Sessions established, by identity.", float64(v), "identity", k)
	})
	g.setupsFailed.each(func(k string, v uint64) {
		phase, reason, _ := strings.Cut(k, "\x00")
		w.Add("fleetgate_session_setup_failures_total", Counter, "Failed session set-ups, by phase and reason.", float64(v), "phase", phase, "reason", reason)
	})
	g.rekeys.each(func(k string, v uint64) {
		w.Add("fleetgate_rekeys_total", Counter, "Completed rekeys, by kind (ike, esp).", float64(v), "kind", k)
	})
	g.dpdFail.each(func(k string, v uint64) {
		w.Add("fleetgate_dpd_failures_total", Counter, "Peers declared dead by IKE DPD, by identity.", float64(v), "identity", k)
	})
	g.lcpFail.each(func(k string, v uint64) {
		w.Add("fleetgate_lcp_echo_failures_total", Counter, "PPP links declared dead by LCP echo, by identity.", float64(v), "identity", k)
	})
	g.reconnects.each(func(k string, v uint64) {
		w.Add("fleetgate_reconnects_total", Counter, "Sessions established by an identity that had one before.", float64(v), "identity", k)
		w.Add("fleetgate_reconnects_last_hour", Gauge, "Reconnects per identity within the last hour.", float64(g.ReconnectsLastHour(k)), "identity", k)
	})
	g.extraMu.Lock()
	exp := append([]Expiry(nil), g.expiry...)
	g.extraMu.Unlock()
	for _, e := range exp {
		w.Add("fleetgate_credential_expiry_timestamp_seconds", Gauge, "When a certificate or PSK expires (Unix time).", float64(e.NotAfter.Unix()), "name", e.Name, "type", e.Type)
	}
}
