// Package metrics holds the gateway's own session-level counters (Gateway)
// and publishes them as a prometheus.Collector. Per-identity and
// per-reason series are const metrics built at scrape time from plain
// atomic counters, so the session engine's paths never touch Prometheus
// types and the protocol packages keep plain Stats structs with no
// Prometheus dependency (STYLE §7).
package metrics

import (
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
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

// Security checks, for Refused (docs/SECURITY.md lists what each means).
const (
	CheckPPPIdentity     = "ppp_identity_mismatch"   // PPP login for another identity than phase 1 proved
	CheckPSKNotBound     = "psk_not_bound"           // phase 1 with a key that is not the one bound to the ID
	CheckInitialContact  = "initial_contact_ignored" // INITIAL-CONTACT from an ID not bound to its key
	CheckAuthHangup      = "ppp_auth_failed_hangup"  // failed PPP login: tunnel and IKE SA closed
	CheckAuthBackoff     = "auth_backoff"            // login refused while its source or identity backs off
	CheckTunnelCap       = "l2tp_tunnel_cap"         // SCCRQ beyond the per-peer tunnel cap
	CheckTunnelUnauth    = "l2tp_tunnel_unauth_timeout"
	CheckSessionUnauth   = "l2tp_second_unauth_session"
	CheckRevokedSession  = "revoked_session_closed" // live session of a revoked certificate closed
	CheckMethodForbidden = "ppp_method_not_allowed"
)

// Rekey kinds, for Rekey.
const (
	RekeyIKE   = "ike"   // IKE (ISAKMP) SA replaced by a new Main Mode
	RekeyIPsec = "ipsec" // IPsec SA pair replaced by a new Quick Mode
)

// SetupBuckets are the upper bounds (seconds) of the set-up latency
// histogram: a loopback set-up takes a few milliseconds, a real one over a
// mobile link up to seconds, a paced fleet reconnect longer.
var SetupBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

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

// each calls fn for every key in sorted order.
func (l *labeled) each(fn func(key string, v uint64)) {
	l.mu.Lock()
	keys := make([]string, 0, len(l.m))
	vals := make([]*atomic.Uint64, 0, len(l.m))
	for k := range l.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals = append(vals, l.m[k])
	}
	l.mu.Unlock()
	for i, k := range keys {
		fn(k, vals[i].Load())
	}
}

// Gateway holds the session-level counters the session engine reports
// through its methods, and exports them as a prometheus.Collector. Make
// it with NewGateway. Safe for concurrent use.
type Gateway struct {
	// Now is the clock for the reconnect window (default time.Now).
	Now func() time.Time

	setupsOK     labeled // identity
	setupsFailed labeled // phase \x00 reason
	rekeys       labeled // kind (ike, ipsec)
	dpdFail      labeled // identity
	lcpFail      labeled // identity
	reconnects   labeled // identity (total)
	refusals     labeled // check
	setupsPeer   labeled // peer implementation (peerid.Kinds)
	setupTime    prometheus.Histogram

	mu     sync.Mutex
	recent map[string][]time.Time // identity -> reconnect times within the last hour
	// failures is the ring of the newest set-ups that failed (status
	// page), failTotal how many were ever recorded.
	failures  []Failure
	failTotal uint64
	expiry    []Expiry
	extraMu   sync.Mutex
}

// NewGateway returns the counters; now is the clock for the reconnect
// window (nil: time.Now).
func NewGateway(now func() time.Time) *Gateway {
	return &Gateway{Now: now, setupTime: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fleetgate_session_setup_duration_seconds",
		Help:    "Session set-up time from the first Main Mode message to IPCP up.",
		Buckets: SetupBuckets,
	})}
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

// SetupPeer counts an established session by the peer implementation
// peerid recognised; a value outside peerid.Kinds counts as "unknown", so
// the label stays bounded.
func (g *Gateway) SetupPeer(kind string) {
	if !peerid.Valid(peerid.Kind(kind)) {
		kind = string(peerid.Unknown)
	}
	g.setupsPeer.inc(kind)
}

// SetupOK counts an established session.
func (g *Gateway) SetupOK(identity string) { g.setupsOK.inc(identity) }

// Refused counts one refusal by a security check (Check* names).
func (g *Gateway) Refused(check string) { g.refusals.inc(check) }

// SetupFailed counts a failed set-up in a phase with a short reason
// ("no_proposal_chosen", "auth_failed", "timeout", ...) and records it in
// the recent-failures ring.
func (g *Gateway) SetupFailed(phase, reason string) { g.SetupFailedBy(phase, "", "", reason) }

// SetupFailedBy is SetupFailed with the peer (outer address) and the
// identity or user the failing layer knows; they go to the ring only,
// never into a metric label (a peer chooses them).
func (g *Gateway) SetupFailedBy(phase, peer, identity, reason string) {
	g.setupsFailed.inc(phase + "\x00" + reason)
	f := Failure{Time: g.now(), Phase: phase, Reason: reason, Peer: peer, Identity: identity}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failTotal++
	if len(g.failures) == FailureRing {
		copy(g.failures, g.failures[1:])
		g.failures = g.failures[:FailureRing-1]
	}
	g.failures = append(g.failures, f)
}

// FailureRing is how many recent failures RecentFailures keeps.
const FailureRing = 100

// Failure is one failed session set-up.
type Failure struct {
	Time           time.Time
	Phase, Reason  string
	Peer, Identity string
}

// RecentFailures returns the newest failures, newest first, and how many
// were recorded since start.
func (g *Gateway) RecentFailures() ([]Failure, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Failure, len(g.failures))
	for i, f := range g.failures {
		out[len(g.failures)-1-i] = f
	}
	return out, g.failTotal
}

// Expiries returns the credential expiry list.
func (g *Gateway) Expiries() []Expiry {
	g.extraMu.Lock()
	defer g.extraMu.Unlock()
	return append([]Expiry(nil), g.expiry...)
}

// SetupDuration records how long a session took from its first Main Mode
// message to IPCP up. Negative durations (clock confusion) are not
// recorded.
func (g *Gateway) SetupDuration(d time.Duration) {
	if d >= 0 && g.setupTime != nil {
		g.setupTime.Observe(d.Seconds())
	}
}

// Rekey counts a completed rekey of kind RekeyIKE or RekeyIPsec.
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

var (
	descSetups = prometheus.NewDesc("fleetgate_session_setups_total",
		"Sessions established, by identity.", []string{"identity"}, nil)
	descSetupsPeer = prometheus.NewDesc("fleetgate_session_setups_by_peer_total",
		"Sessions established, by peer implementation (windows, apple, android, strongswan, libreswan, xl2tpd, softether, mikrotik, fleetgate-bridge, unknown).", []string{"peer"}, nil)
	descSetupFailures = prometheus.NewDesc("fleetgate_session_setup_failures_total",
		"Failed session set-ups, by phase and reason.", []string{"phase", "reason"}, nil)
	descRekeys = prometheus.NewDesc("fleetgate_rekeys_total",
		"Completed rekeys, by kind (ike: IKE SA, ipsec: IPsec SA).", []string{"kind"}, nil)
	descDPD = prometheus.NewDesc("fleetgate_dpd_failures_total",
		"Peers declared dead by IKE DPD, by identity.", []string{"identity"}, nil)
	descLCP = prometheus.NewDesc("fleetgate_lcp_echo_failures_total",
		"PPP links declared dead by LCP echo, by identity.", []string{"identity"}, nil)
	descReconnects = prometheus.NewDesc("fleetgate_reconnects_total",
		"Sessions established by an identity that had one before.", []string{"identity"}, nil)
	descReconnectsHour = prometheus.NewDesc("fleetgate_reconnects_last_hour",
		"Reconnects per identity within the last hour.", []string{"identity"}, nil)
	descRefusals = prometheus.NewDesc("fleetgate_security_refusals_total",
		"Logins, notifies, tunnels and sessions refused by a security check (docs/SECURITY.md).", []string{"check"}, nil)
	descExpiry = prometheus.NewDesc("fleetgate_credential_expiry_timestamp_seconds",
		"When a certificate or PSK expires (Unix time).", []string{"name", "type"}, nil)
)

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSetups, descSetupsPeer, descSetupFailures, descRekeys, descDPD, descLCP, descReconnects, descReconnectsHour, descExpiry, descRefusals} {
		ch <- d
	}
	if g.setupTime != nil {
		g.setupTime.Describe(ch)
	}
}

// Collect implements prometheus.Collector: the counters as they are now.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	one := func(d *prometheus.Desc, l *labeled) {
		l.each(func(k string, v uint64) { Emit(ch, d, prometheus.CounterValue, float64(v), k) })
	}
	one(descSetups, &g.setupsOK)
	one(descSetupsPeer, &g.setupsPeer)
	g.setupsFailed.each(func(k string, v uint64) {
		phase, reason, _ := strings.Cut(k, "\x00")
		Emit(ch, descSetupFailures, prometheus.CounterValue, float64(v), phase, reason)
	})
	one(descRekeys, &g.rekeys)
	one(descDPD, &g.dpdFail)
	one(descLCP, &g.lcpFail)
	one(descRefusals, &g.refusals)
	g.reconnects.each(func(k string, v uint64) {
		Emit(ch, descReconnects, prometheus.CounterValue, float64(v), k)
		Emit(ch, descReconnectsHour, prometheus.GaugeValue, float64(g.ReconnectsLastHour(k)), k)
	})
	g.extraMu.Lock()
	exp := append([]Expiry(nil), g.expiry...)
	g.extraMu.Unlock()
	for _, e := range exp {
		Emit(ch, descExpiry, prometheus.GaugeValue, float64(e.NotAfter.Unix()), e.Name, e.Type)
	}
	if g.setupTime != nil {
		g.setupTime.Collect(ch)
	}
}

// Emit sends one const metric. Label values come from peers (a RADIUS
// user name is an identity) and must be valid UTF-8 for Prometheus:
// invalid bytes become U+FFFD instead of failing the scrape.
func Emit(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	for i, l := range labels {
		if !utf8.ValidString(l) {
			labels[i] = strings.ToValidUTF8(l, "\uFFFD")
		}
	}
	if m, err := prometheus.NewConstMetric(d, t, v, labels...); err == nil {
		ch <- m
	}
}
