package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// normalize checks neighbours and fills their defaults in place.
func normalize(ns []Neighbor) error {
	seen := map[netip.Addr]bool{}
	for i := range ns {
		n := &ns[i]
		if !n.Addr.Is4() || n.AS == 0 {
			return fmt.Errorf("%w: neighbour %d needs an IPv4 address and an AS", ErrConfig, i+1)
		}
		if seen[n.Addr] {
			return fmt.Errorf("%w: neighbour %s listed twice", ErrConfig, n.Addr)
		}
		seen[n.Addr] = true
		if n.Port == 0 {
			n.Port = DefaultPort
		}
		if n.HoldTime == 0 {
			n.HoldTime = DefaultHoldTime
		}
		if n.ConnectRetry == 0 {
			n.ConnectRetry = DefaultConnectRetry
		}
	}
	return nil
}

// Reconfigure applies a reload (SIGHUP) to a running speaker: neighbours
// added, removed or changed (a changed one is removed and added again:
// its session restarts), and new communities or next hop (every path is
// announced again). Local AS and router ID need a restart. It returns
// what changed, for the reload log line.
func (s *Speaker) Reconfigure(ctx context.Context, neighbors []Neighbor, nextHop netip.Addr, communities []uint32) (added, removed, changed int, err error) {
	ns := slices.Clone(neighbors)
	if err := normalize(ns); err != nil {
		return 0, 0, 0, err
	}
	if !nextHop.IsValid() {
		nextHop = s.cfg.RouterID
	}
	old := map[netip.Addr]Neighbor{}
	for _, n := range s.cfg.Neighbors {
		old[n.Addr] = n
	}
	next := map[netip.Addr]bool{}
	for _, n := range ns {
		next[n.Addr] = true
		o, had := old[n.Addr]
		switch {
		case !had:
			if s.srv != nil {
				if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(n)}); err != nil {
					return added, removed, changed, fmt.Errorf("bgp: add neighbour %s: %w", n.Addr, err)
				}
			}
			added++
		case o != n:
			if s.srv != nil {
				if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: n.Addr.String()}); err != nil {
					return added, removed, changed, fmt.Errorf("bgp: change neighbour %s: %w", n.Addr, err)
				}
				if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(n)}); err != nil {
					return added, removed, changed, fmt.Errorf("bgp: change neighbour %s: %w", n.Addr, err)
				}
			}
			changed++
		}
	}
	for a := range old {
		if !next[a] {
			if s.srv != nil {
				if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
					return added, removed, changed, fmt.Errorf("bgp: remove neighbour %s: %w", a, err)
				}
			}
			removed++
		}
	}
	s.mu.Lock()
	s.cfg.Neighbors = ns
	for a := range s.peers {
		if !next[a] {
			delete(s.peers, a)
		}
	}
	for _, n := range ns {
		if p, ok := s.peers[n.Addr]; !ok || old[n.Addr] != n {
			if ok {
				p.AS = n.AS
			} else {
				s.peers[n.Addr] = &NeighborState{Addr: n.Addr, AS: n.AS, State: "idle"}
			}
		}
	}
	reannounce := nextHop != s.attrs.nextHop || !slices.Equal(communities, s.attrs.communities)
	if reannounce {
		s.attrs = pathAttrs{nextHop: nextHop, nextHop6: s.cfg.NextHop6, communities: slices.Clone(communities)}
		s.attrGen++
	}
	s.mu.Unlock()
	if reannounce {
		s.wake()
	}
	if added+removed+changed > 0 || reannounce {
		s.log.Info("bgp reconfigured", "neighbors_added", added, "neighbors_removed", removed, "neighbors_changed", changed, "paths_reannounced", reannounce)
	}
	return added, removed, changed, nil
}
