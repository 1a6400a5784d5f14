package server

import (
	"slices"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/radius"
)

// Reload applies a new, validated configuration (SIGHUP): identities,
// routes, policy, pacing, PSKs and the CA/CRL take effect at once; the
// sessions of removed or changed identities (all of them if a global
// setting such as the pool changed) are terminated so they reconnect under
// the new rules; other sessions keep running untouched. Settings that need
// a restart are reported in Changes.RestartNeeded and keep their old
// values.
func (s *Server) Reload(next *config.Config) (config.Changes, error) {
	prev := s.cfg.Load()
	ch := config.Diff(prev, next)
	v, err := s.newVerifier(next)
	if err != nil {
		return ch, err
	}
	// Settings a reload cannot change keep their running values.
	next.Listen, next.DataPlane.Mode, next.DataPlane.TUN = prev.Listen, prev.DataPlane.Mode, prev.DataPlane.TUN
	next.Metrics, next.Status, next.Log = prev.Metrics, prev.Status, prev.Log
	s.reloadBGP(prev, next) // see bgp.go
	if prev.Pool.PrefixP != next.Pool.PrefixP || prev.Pool.GatewayAddr != next.Pool.GatewayAddr {
		p, err := newPool(next)
		if err != nil {
			return ch, err
		}
		s.pool.Store(p)
	} else {
		p := s.pool.Load()
		for _, id := range next.Identities {
			if id.Addr.IsValid() {
				p.Reserve(id.Addr)
			}
		}
	}
	if err := s.reloadPool6(prev, next); err != nil {
		return ch, err
	}
	s.reloadRoutes6(prev, next) // TUN mode: IPv6 routes follow (pool6.go)
	s.verifier.Store(v)
	s.cfg.Store(next)
	s.router.SetPolicies(s.compilePolicies(next))
	s.router.SetSessionToSession(next.DataPlane.SessionToSession)
	s.adm.SetRates(next.Pacing.GlobalRate, next.Pacing.GlobalBurst, next.Pacing.PerSourceRate, next.Pacing.PerSourceBurst)
	s.setExpiries(next)
	ab := next.AuthBackoff
	s.bo.SetParams(ab.Free, ab.DelayD, ab.MaxDelayD, ab.ForgetD)
	s.mu.Lock()
	hooks := slices.Clone(s.reloadHooks)
	s.mu.Unlock()
	for _, fn := range hooks {
		fn(next) // e.g. the engine's IKE proposals (Env.OnReload)
	}
	closed := s.CloseSessions(func(sess Session) bool { return ch.Affects(sess.Identity()) }, "configuration reloaded")
	// A certificate the new CRL revokes ends its live sessions and IKE SA.
	revoked := 0
	if v != nil {
		revoked = s.CloseSessions(func(sess Session) bool {
			p, ok := sess.(Phase1er)
			if !ok || p.Phase1().Cert == nil {
				return false
			}
			if err := v.CheckRevoked(p.Phase1().Cert); err != nil {
				s.gm.Refused(metrics.CheckRevokedSession)
				s.log.Warn("closing the session of a revoked certificate", "session_id", sess.ID(), "identity", sess.Identity(),
					"subject", p.Phase1().Cert.Subject.String(), "serial", p.Phase1().Cert.SerialNumber.String())
				return true
			}
			return false
		}, "certificate revoked")
	}
	s.log.Info("configuration reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed,
		"all_sessions", ch.AllSessions, "restart_needed", ch.RestartNeeded, "sessions_closed", closed+revoked, "revoked_closed", revoked)
	return ch, nil
}

// CloseSessions ends every live session for which pred is true and
// returns how many: each leaves the session table at once (its routes are
// withdrawn, traffic to it stops), then its peer is told (PPP Terminate,
// CDN, StopCCN, and for Hangupper sessions the IKE SA too, so it cannot
// log in again over the old SA but must pass phase 1 under the new
// rules); the engine unregisters it (accounting Stop)
// when the link has ended. Used by reload (changed or removed identities,
// revoked certificates) and by anything that withdraws trust at run time
// (a CRL fetched in the background).
func (s *Server) CloseSessions(pred func(Session) bool, reason string) int {
	n := 0
	for _, sess := range s.table.Sessions() {
		if !pred(sess) {
			continue
		}
		n++
		s.withdraw(sess) // BGP: the prefixes are no longer ours
		if s.table.Remove(sess) {
			s.delRoutes(sess)
		}
		switch t := sess.(type) {
		case Hangupper:
			t.Hangup(reason)
			continue
		case Terminator:
			t.Terminate(reason)
			continue
		}
		// Nothing to tell the peer through: the engine's own teardown
		// will follow; end accounting now.
		s.env.Unregister(sess, radius.CauseAdminReset)
	}
	return n
}

// setExpiries exports certificate and PSK expiry dates as metrics.
func (s *Server) setExpiries(cfg *config.Config) {
	var out []metrics.Expiry
	if cfg.PKI.Dir != "" {
		if idx, err := (&pki.Store{Dir: cfg.PKI.Dir}).Index(); err == nil {
			for _, e := range idx {
				if !e.Revoked() {
					out = append(out, metrics.Expiry{Name: e.Name, Type: "cert", NotAfter: e.NotAfter})
				}
			}
		}
	}
	for _, e := range PSKExpiries(cfg) {
		out = append(out, metrics.Expiry{Name: e.Name, Type: e.Type, NotAfter: e.NotAfter})
	}
	s.gm.SetExpiries(out)
}

// PSKExpiries lists the PSKs with an expiry date in the configuration.
func PSKExpiries(cfg *config.Config) []pki.Expiry {
	var out []pki.Expiry
	if !cfg.PSK.SharedNotAfter.IsZero() {
		out = append(out, pki.Expiry{Name: "shared", Type: "psk", Kind: "shared", NotAfter: cfg.PSK.SharedNotAfter})
	}
	for _, id := range cfg.Identities {
		if !id.PSKNotAfter.IsZero() {
			out = append(out, pki.Expiry{Name: id.Name, Type: "psk", Kind: "identity", NotAfter: id.PSKNotAfter})
		}
	}
	return out
}
