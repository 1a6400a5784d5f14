package server

import (
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
	next.BGP = prev.BGP // the speaker's neighbours are set up at start
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
	s.verifier.Store(v)
	s.cfg.Store(next)
	s.router.SetPolicies(s.compilePolicies(next))
	s.router.SetSessionToSession(next.DataPlane.SessionToSession)
	s.adm.SetRates(next.Pacing.GlobalRate, next.Pacing.GlobalBurst, next.Pacing.PerSourceRate, next.Pacing.PerSourceBurst)
	s.setExpiries(next)
	closed := 0
	for _, sess := range s.table.Sessions() {
		if !ch.Affects(sess.Identity()) {
			continue
		}
		closed++
		s.withdraw(sess) // its routes may be gone from the new file
		if t, ok := sess.(Terminator); ok {
			t.Terminate("configuration reloaded")
		} else {
			// Nothing to tell the peer through: drop it from the table so
			// traffic stops; the engine's own teardown will follow.
			s.env.Unregister(sess, radius.CauseAdminReset)
		}
	}
	s.log.Info("configuration reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed,
		"all_sessions", ch.AllSessions, "restart_needed", ch.RestartNeeded, "sessions_closed", closed)
	return ch, nil
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
