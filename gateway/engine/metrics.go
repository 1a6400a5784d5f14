package engine

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// ikeSeen remembers the IKE counters already turned into gateway metrics.
type ikeSeen struct {
	mu                                                                 sync.Mutex
	auth, noProp, quickNoProp, p1, p2, rateLimited, halfOpen, halfLost uint64
	sourceSAs, quickModes                                              uint64
	ikeRekeys, childRekeys                                             uint64
	tunnelCap, tunnelUnauth, sessUnauth, hangup, noIdent               uint64
}

// metricsLoop turns the IKE engine's counters into the gateway's set-up
// failure and rekey metrics every statsInterval. uplink/l2tpipsec keeps the
// IKE events to itself, so counters are the only view the engine has of
// failures that never reached a session.
func (e *Engine) metricsLoop(ctx context.Context, env *server.Env, srv *l2tpipsec.Server) {
	for {
		t := e.cfg.Clock.NewTimer(statsInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		e.syncMetrics(env, srv)
	}
}

// syncMetrics reports the IKE counters' growth since the last call.
func (e *Engine) syncMetrics(env *server.Env, srv *l2tpipsec.Server) {
	st := srv.Stats().IKE
	if st == nil {
		return
	}
	s := &e.seen
	s.mu.Lock()
	defer s.mu.Unlock()
	report := func(last *uint64, now uint64, fn func()) {
		for ; *last < now; *last++ {
			fn()
		}
	}
	g := srv.GuardStats()
	report(&s.tunnelCap, g.TunnelsRefused.Load(), func() { env.Metrics.Refused(metrics.CheckTunnelCap) })
	report(&s.tunnelUnauth, g.TunnelsTimedOut.Load(), func() { env.Metrics.Refused(metrics.CheckTunnelUnauth) })
	report(&s.sessUnauth, g.SessionsRefused.Load(), func() { env.Metrics.Refused(metrics.CheckSessionUnauth) })
	report(&s.hangup, g.AuthHangups.Load(), func() { env.Metrics.Refused(metrics.CheckAuthHangup) })
	report(&s.noIdent, g.NoIdentity.Load(), func() {
		env.Metrics.Refused(metrics.CheckPPPIdentity)
		env.Metrics.SetupFailed(metrics.PhaseAuth, "identity_mismatch")
	})
	auth := st.AuthFailures.Load()
	noProp := st.NoProposalChosen.Load()
	report(&s.auth, auth, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "auth_failed") })
	report(&s.noProp, noProp, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "no_proposal_chosen") })
	report(&s.quickNoProp, st.QuickNoProposal.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseIKEQuick, "no_proposal_chosen") })
	report(&s.rateLimited, st.RateLimited.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "rate_limited_per_source") })
	report(&s.halfOpen, st.HalfOpenDropped.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "half_open_limit") })
	// A peer answered MM2 after a flood had evicted its half-open state
	// (ike.Config.MaxHalfOpen too small for the flood), or after HalfOpenTTL.
	report(&s.halfLost, st.HalfOpenLost.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "half_open_lost") })
	report(&s.sourceSAs, st.SourceSALimited.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "sas_per_source") })
	report(&s.quickModes, st.QuickModeLimited.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseIKEQuick, "quick_mode_limit") })
	// Phase 1 failures other than the two classified above (Phase1Failed
	// includes them).
	if p1, known := st.Phase1Failed.Load(), auth+noProp; p1 > known {
		report(&s.p1, p1-known, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "other") })
	}
	report(&s.p2, st.Phase2Failed.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseIKEQuick, "failed") })
	// ike.Stats counts every rekey in Rekeys and the IPsec SA ones also in
	// ChildRekeys. Rekeys is read first: an IPsec rekey in flight between
	// the two reads then makes the IKE figure low for one round (caught up
	// later), never high for good.
	all := st.Rekeys.Load()
	child := st.ChildRekeys.Load()
	report(&s.childRekeys, child, func() { env.Metrics.Rekey(metrics.RekeyIPsec) })
	if all > child {
		report(&s.ikeRekeys, all-child, func() { env.Metrics.Rekey(metrics.RekeyIKE) })
	}
}

// setupClock remembers when first Main Mode messages were admitted, by
// source address, so the session that reaches IPCP from that address can
// report its set-up time. The first message carries only the initiator
// cookie, which the tunnel server does not expose with a session, so the
// match is by outer IP address: the newest unclaimed first message from
// that address within setupWindow. Peers behind one NAT that set up at the
// same moment may swap their figures; the histogram barely changes.
type setupClock struct {
	mu   sync.Mutex
	byIP map[netip.Addr][]time.Time
	n    int
}

func (c *setupClock) note(src netip.Addr, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byIP == nil {
		c.byIP = map[netip.Addr][]time.Time{}
	}
	if c.n >= admittedMax { // a flood of Main Modes that never finish
		for ip, ts := range c.byIP {
			kept := pruneBefore(ts, now.Add(-setupWindow))
			c.n -= len(ts) - len(kept)
			if len(kept) == 0 {
				delete(c.byIP, ip)
			} else {
				c.byIP[ip] = kept
			}
		}
		if c.n >= admittedMax {
			clear(c.byIP)
			c.n = 0
		}
	}
	ts := c.byIP[src]
	kept := pruneBefore(ts, now.Add(-setupWindow))
	c.n += 1 - (len(ts) - len(kept))
	c.byIP[src] = append(kept, now)
}

// take returns and forgets the newest first-message time from ip within
// setupWindow before up. The newest, not the oldest: a phase 1 rekey also
// starts with a first Main Mode and never reaches IPCP, and must not be
// taken for the start of a later set-up from the same address.
func (c *setupClock) take(ip netip.Addr, up time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.byIP[ip]
	kept := pruneBefore(ts, up.Add(-setupWindow))
	c.n -= len(ts) - len(kept)
	i := len(kept) - 1
	for i >= 0 && kept[i].After(up) {
		i--
	}
	if i < 0 {
		if len(kept) == 0 {
			delete(c.byIP, ip)
		} else {
			c.byIP[ip] = kept
		}
		return time.Time{}, false
	}
	t0 := kept[i]
	kept = append(kept[:i], kept[i+1:]...)
	c.n--
	if len(kept) == 0 {
		delete(c.byIP, ip)
	} else {
		c.byIP[ip] = kept
	}
	return t0, true
}

func pruneBefore(ts []time.Time, cut time.Time) []time.Time {
	i := 0
	for i < len(ts) && ts[i].Before(cut) {
		i++
	}
	return ts[i:]
}
