package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/gateway/status"
)

// radiusFleet is the gateway's part of a shared AAA: the accounting spool
// (records survive server outages and restarts), the RFC 5176 listener
// (an operator's radclient ends a session or changes its filter), and the
// Filter-Id policies CoA set per identity.
type radiusFleet struct {
	spool *radius.Spool
	dae   atomic.Pointer[radius.DAE] // set by Run, read by status
	// bootID makes Acct-Session-Id unique across the fleet and across
	// restarts: NAS-Identifier, then 8 random hex digits drawn at start.
	bootID string

	mu      sync.Mutex
	filters map[string]string // identity → policy name set by CoA Filter-Id
}

func (s *Server) openSpool(r *config.RADIUS) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	s.fleet.bootID = hex.EncodeToString(b[:])
	if !s.rad.HasAcct() {
		return nil
	}
	sp, err := radius.OpenSpool(s.rad, r.AcctSpool, r.AcctSpoolMax, s.log)
	if err != nil {
		return err
	}
	s.fleet.spool = sp
	return nil
}

// acctSessionID is the session's Acct-Session-Id: "<nas>-<boot>-<id>".
func (s *Server) acctSessionID(sess Session) string {
	nas := "fleetgate"
	if r := s.cfg.Load().RADIUS; r != nil {
		nas = r.NASIdentifier
	}
	return fmt.Sprintf("%s-%s-%d", nas, s.fleet.bootID, sess.ID())
}

// startRADIUSFleet starts the spool sender and the DAE listener; the
// returned stop delivers what it can within the timeout and closes both.
// It runs after the final Unregister so the shutdown's Stops are sent.
func (s *Server) startRADIUSFleet(cfg *config.Config) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	r := cfg.RADIUS
	if s.fleet.spool != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.fleet.spool.Run(ctx, 2*r.TimeoutD) }()
	}
	if r != nil && r.DAEListen != "" {
		d, err := radius.ListenDAE(radius.DAEConfig{Listen: r.DAEListen, Secret: []byte(r.DAESecret), Clients: r.DAEClientPrefixes,
			Disconnect: s.daeDisconnect, CoA: s.daeCoA, Logger: s.log})
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("server: %w", err)
		}
		s.fleet.dae.Store(d)
		s.log.Info("radius dynamic authorization listening", "addr", d.Addr().String())
		wg.Add(1)
		go func() { defer wg.Done(); d.Serve(ctx) }()
	}
	return func() {
		cancel()
		wg.Wait()
		if s.fleet.spool != nil {
			_ = s.fleet.spool.Close(false)
		}
	}, nil
}

// radiusReport is the status report's RADIUS part.
func (s *Server) radiusReport() *status.RADIUS {
	if s.rad == nil {
		return nil
	}
	r := &status.RADIUS{Servers: s.rad.ServersAlive(), DAE: s.DAEAddr()}
	if sp := s.fleet.spool; sp != nil {
		r.SpoolQueued, r.SpoolDelivered = sp.Stats.Queued.Load(), sp.Stats.Delivered.Load()
	}
	return r
}

// DAEAddr is the bound Disconnect/CoA address ("" when off).
func (s *Server) DAEAddr() string {
	d := s.fleet.dae.Load()
	if d == nil {
		return ""
	}
	return d.Addr().String()
}

// matching returns the sessions a Disconnect/CoA names.
func (s *Server) matching(m radius.SessionMatch) []Session {
	var out []Session
	for _, sess := range s.table.Sessions() {
		if m.SessionID != "" && m.SessionID != s.acctSessionID(sess) {
			continue
		}
		if m.FramedIP.IsValid() && m.FramedIP != sess.Addr() {
			continue
		}
		if m.User != "" {
			s.mu.Lock()
			st := s.states[sess.ID()]
			s.mu.Unlock()
			user := sess.Identity()
			if st != nil {
				user = st.user
			}
			if m.User != user && m.User != sess.Identity() {
				continue
			}
		}
		out = append(out, sess)
	}
	return out
}

// daeDisconnect ends the named sessions: routes withdrawn at once, then
// the engine's teardown (Delete, StopCCN) and accounting Stop.
func (s *Server) daeDisconnect(m radius.SessionMatch) int {
	ss := s.matching(m)
	for _, sess := range ss {
		s.withdraw(sess)
		s.log.Info("session disconnected by RADIUS Disconnect-Request", "session_id", sess.ID(), "identity", sess.Identity())
		if t, ok := sess.(Terminator); ok {
			t.Terminate("RADIUS Disconnect-Request")
		} else {
			s.env.Unregister(sess, radius.CauseAdminReset)
		}
	}
	return len(ss)
}

// daeCoA applies a Filter-Id: the named policy replaces the identity's
// policy while its session lasts.
func (s *Server) daeCoA(m radius.SessionMatch, filter string) (int, error) {
	cfg := s.cfg.Load()
	if _, ok := cfg.Policies[filter]; !ok {
		return 0, fmt.Errorf("Filter-Id %q names no policy", filter)
	}
	ss := s.matching(m)
	if len(ss) == 0 {
		return 0, nil
	}
	s.fleet.mu.Lock()
	if s.fleet.filters == nil {
		s.fleet.filters = map[string]string{}
	}
	for _, sess := range ss {
		s.fleet.filters[sess.Identity()] = filter
	}
	s.fleet.mu.Unlock()
	s.router.SetPolicies(s.compilePolicies(cfg))
	return len(ss), nil
}

// clearFilter drops a CoA filter when the identity's session ends.
func (s *Server) clearFilter(identity string) {
	s.fleet.mu.Lock()
	_, ok := s.fleet.filters[identity]
	delete(s.fleet.filters, identity)
	s.fleet.mu.Unlock()
	if ok {
		s.router.SetPolicies(s.compilePolicies(s.cfg.Load()))
	}
}

// compilePolicies is policy.Compile with the CoA filters applied.
func (s *Server) compilePolicies(cfg *config.Config) *policy.Set {
	s.fleet.mu.Lock()
	over := make(map[string]string, len(s.fleet.filters))
	for k, v := range s.fleet.filters {
		over[k] = v
	}
	s.fleet.mu.Unlock()
	if len(over) == 0 {
		return policy.Compile(cfg)
	}
	c := *cfg
	c.Identities = append([]config.Identity(nil), cfg.Identities...)
	for i := range c.Identities {
		if f, ok := over[c.Identities[i].Name]; ok {
			c.Identities[i].Policy = f
			delete(over, c.Identities[i].Name)
		}
	}
	for name, f := range over { // RADIUS-only users
		c.Identities = append(c.Identities, config.Identity{Name: name, Policy: f})
	}
	return policy.Compile(&c)
}

var (
	descSpoolQueued  = desc("fleetgate_radius_acct_spool_records", "Accounting records waiting for a server.")
	descSpoolEvents  = desc("fleetgate_radius_acct_spool_total", "Accounting spool events by kind (submitted, delivered, delayed, dropped, rejected).", "kind")
	descRadPool      = desc("fleetgate_radius_pool_events_total", "RADIUS server pool events (server_dead, failover, all_dead).", "kind")
	descRadServerUp  = desc("fleetgate_radius_server_up", "1 while a RADIUS server is considered alive.", "server")
	descDAERequests  = desc("fleetgate_radius_dae_replies_total", "Disconnect/CoA replies sent, by reply.", "reply")
	descDAEDiscarded = desc("fleetgate_radius_dae_dropped_total", "Disconnect/CoA datagrams dropped, by reason.", "reason")
)

// radiusFleetCollector exports the pool, spool and DAE counters.
type radiusFleetCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (radiusFleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSpoolQueued, descSpoolEvents, descRadPool, descRadServerUp, descDAERequests, descDAEDiscarded} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c radiusFleetCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	cnt := func(d *prometheus.Desc, v uint64, l string) {
		metrics.Emit(ch, d, prometheus.CounterValue, float64(v), l)
	}
	if s.rad != nil {
		st := &s.rad.Stats
		cnt(descRadPool, st.ServerDead.Load(), "server_dead")
		cnt(descRadPool, st.Failovers.Load(), "failover")
		cnt(descRadPool, st.AllDead.Load(), "all_dead")
		for srv, up := range s.rad.ServersAlive() {
			v := 0.0
			if up {
				v = 1
			}
			metrics.Emit(ch, descRadServerUp, prometheus.GaugeValue, v, srv)
		}
	}
	if sp := s.fleet.spool; sp != nil {
		st := &sp.Stats
		metrics.Emit(ch, descSpoolQueued, prometheus.GaugeValue, float64(st.Queued.Load()))
		cnt(descSpoolEvents, st.Submitted.Load(), "submitted")
		cnt(descSpoolEvents, st.Delivered.Load(), "delivered")
		cnt(descSpoolEvents, st.Delayed.Load(), "delayed")
		cnt(descSpoolEvents, st.Dropped.Load(), "dropped")
		cnt(descSpoolEvents, st.Rejected.Load(), "rejected")
	}
	if d := s.fleet.dae.Load(); d != nil {
		st := &d.Stats
		cnt(descDAERequests, st.DisconnectACK.Load(), "disconnect_ack")
		cnt(descDAERequests, st.DisconnectNAK.Load(), "disconnect_nak")
		cnt(descDAERequests, st.CoAACK.Load(), "coa_ack")
		cnt(descDAERequests, st.CoANAK.Load(), "coa_nak")
		cnt(descDAEDiscarded, st.Malformed.Load(), "malformed")
		cnt(descDAEDiscarded, st.BadAuthenticator.Load(), "bad_authenticator")
		cnt(descDAEDiscarded, st.UnknownClient.Load(), "unknown_client")
	}
}
