package server

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/gateway/bgp"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/status"
)

// The BGP hook: a registered session's PPP /32 and framed routes are
// announced (keyed by session ID, so a relogin that overlaps its old session
// keeps them announced), an unregistered session's are withdrawn, and a
// reload withdraws the prefixes of the sessions it closes at once. None of
// these calls waits for a neighbour (see package bgp).

// newSpeaker builds the speaker from cfg.BGP (nil when not configured).
func (s *Server) newSpeaker(cfg *config.Config) (*bgp.Speaker, error) {
	b := cfg.BGP
	if b == nil {
		return nil, nil
	}
	c := bgp.Config{LocalAS: b.LocalAS, RouterID: b.RouterIDAddr, NextHop: b.NextHopAddr, NextHop6: b.NextHop6Addr, LocalAddr: b.LocalAddr,
		Communities: b.CommunityValues, MaxPrefixes: b.MaxPrefixes, Logger: s.log}
	c.Neighbors = speakerNeighbors(b)
	return bgp.New(c)
}

// startBGP connects the speaker; a failure is logged and sessions go on
// without route announcements.
func (s *Server) startBGP(ctx context.Context) {
	if s.bgp == nil {
		return
	}
	if err := s.bgp.Start(ctx); err != nil {
		// Announce and Withdraw keep working on a speaker that never
		// started; nothing leaves the gateway.
		s.log.Error("bgp speaker not started: sessions run without route announcements", "err", err)
	}
}

// stopBGP withdraws everything and closes the neighbour sessions.
func (s *Server) stopBGP() {
	if s.bgp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.bgp.Stop(ctx)
}

// announce is called when sess is registered.
func (s *Server) announce(sess Session) {
	if s.bgp == nil {
		return
	}
	ps := append([]netip.Prefix{netip.PrefixFrom(sess.Addr(), 32)}, sess.Routes()...)
	if pf := sessionIPv6(sess); pf.IsValid() { // announced when bgp.next_hop6 is set
		ps = append(ps, pf)
	}
	s.bgp.Announce(sess.ID(), ps)
}

// withdraw is called when sess ends (or a reload closes it).
func (s *Server) withdraw(sess Session) {
	if s.bgp != nil {
		s.bgp.Withdraw(sess.ID())
	}
}

// reloadBGP applies a reload's bgp section to the running speaker:
// neighbours, communities and next hop; a section that only a restart can
// change (on/off, local AS, router ID, source address) keeps its running
// values in next.
func (s *Server) reloadBGP(prev, next *config.Config) {
	if s.bgp == nil || next.BGP == nil || prev.BGP == nil || next.BGP.LocalAS != prev.BGP.LocalAS ||
		next.BGP.RouterIDAddr != prev.BGP.RouterIDAddr || next.BGP.LocalAddr != prev.BGP.LocalAddr {
		next.BGP = prev.BGP
		return
	}
	next.BGP.NextHop6, next.BGP.NextHop6Addr = prev.BGP.NextHop6, prev.BGP.NextHop6Addr // needs a restart
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, _, err := s.bgp.Reconfigure(ctx, speakerNeighbors(next.BGP), next.BGP.NextHopAddr, next.BGP.CommunityValues); err != nil {
		s.log.Error("bgp reload failed: neighbours may be partly updated", "err", err)
	}
}

func speakerNeighbors(b *config.BGP) []bgp.Neighbor {
	var out []bgp.Neighbor
	for _, n := range b.Neighbors {
		out = append(out, bgp.Neighbor{Addr: n.Addr, AS: n.AS, Port: uint16(n.Port), Password: n.Password,
			HoldTime: n.HoldTimeD, ConnectRetry: n.ConnectRetryD})
	}
	return out
}

// bgpReport is the status report's BGP part.
func (s *Server) bgpReport() *status.BGP {
	if s.bgp == nil {
		return nil
	}
	r := &status.BGP{LocalAS: s.cfg.Load().BGP.LocalAS, Announced: int(s.bgp.Stats.Announced.Load())}
	for _, n := range s.bgp.Neighbors() {
		r.Neighbors = append(r.Neighbors, status.BGPNeighbor{Addr: n.Addr.String(), AS: n.AS, State: n.State, Since: n.Since})
	}
	return r
}

var (
	descBGPNeighborUp = desc("fleetgate_bgp_neighbor_up", "1 while the BGP session with the neighbour is established.", "neighbor")
	descBGPAnnounced  = desc("fleetgate_bgp_prefixes_announced", "Prefixes announced to the BGP neighbours now.")
	descBGPUpdates    = desc("fleetgate_bgp_rib_changes_total", "Prefixes added to or withdrawn from the BGP RIB.", "kind")
	descBGPFlaps      = desc("fleetgate_bgp_neighbor_transitions_total", "BGP neighbour session state changes.")
	descBGPErrors     = desc("fleetgate_bgp_errors_total", "RIB operations refused, and prefixes over bgp.max_prefixes.", "kind")
)

// bgpCollector exports the speaker's state.
type bgpCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBGPNeighborUp, descBGPAnnounced, descBGPUpdates, descBGPFlaps, descBGPErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	sp := c.s.bgp
	if sp == nil {
		return
	}
	for _, n := range sp.Neighbors() {
		up := 0.0
		if n.Established {
			up = 1
		}
		metrics.Emit(ch, descBGPNeighborUp, prometheus.GaugeValue, up, n.Addr.String())
	}
	st := &sp.Stats
	metrics.Emit(ch, descBGPAnnounced, prometheus.GaugeValue, float64(st.Announced.Load()))
	metrics.Emit(ch, descBGPUpdates, prometheus.CounterValue, float64(st.Announces.Load()), "announce")
	metrics.Emit(ch, descBGPUpdates, prometheus.CounterValue, float64(st.Withdraws.Load()), "withdraw")
	metrics.Emit(ch, descBGPFlaps, prometheus.CounterValue, float64(st.PeerTransitions.Load()))
	metrics.Emit(ch, descBGPErrors, prometheus.CounterValue, float64(st.Errors.Load()), "rib")
	metrics.Emit(ch, descBGPErrors, prometheus.CounterValue, float64(st.OverLimit.Load()), "over_limit")
}
