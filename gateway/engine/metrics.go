package engine

import (
	"context"
	"sync"

	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// ikeSeen remembers the IKE counters already turned into gateway metrics.
type ikeSeen struct {
	mu                                                  sync.Mutex
	auth, noProp, p1, p2, rekeys, rateLimited, halfOpen uint64
}

// metricsLoop turns the IKE engine's counters into the gateway's set-up
// failure and rekey metrics every statsInterval. uplink/tunnel keeps the
// IKE events to itself, so counters are the only view the engine has of
// failures that never reached a session.
func (e *Engine) metricsLoop(ctx context.Context, env *server.Env, srv *tunnel.Server) {
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
func (e *Engine) syncMetrics(env *server.Env, srv *tunnel.Server) {
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
	auth := st.AuthFailures.Load()
	noProp := st.NoProposalChosen.Load()
	report(&s.auth, auth, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "auth_failed") })
	report(&s.noProp, noProp, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "no_proposal_chosen") })
	report(&s.rateLimited, st.RateLimited.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "rate_limited_per_source") })
	report(&s.halfOpen, st.HalfOpenDropped.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseAdmission, "half_open_limit") })
	// Phase 1 failures other than the two classified above (Phase1Failed
	// includes them).
	if p1, known := st.Phase1Failed.Load(), auth+noProp; p1 > known {
		report(&s.p1, p1-known, func() { env.Metrics.SetupFailed(metrics.PhaseIKEMain, "other") })
	}
	report(&s.p2, st.Phase2Failed.Load(), func() { env.Metrics.SetupFailed(metrics.PhaseIKEQuick, "failed") })
	// IKE and IPsec SA rekeys are one counter in ike.Stats.
	report(&s.rekeys, st.Rekeys.Load(), func() { env.Metrics.Rekey("sa") })
}
