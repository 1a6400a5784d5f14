// Per-peer bounds on the server's L2TP state: tunnels per peer, the
// unauthenticated-tunnel timeout, and the counters of what was refused.

package l2tpipsec

import (
	"net"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
)

// tunnelState is what the server tracks per L2TP tunnel.
type tunnelState struct {
	unauth int  // sessions that have not authenticated yet
	authed bool // a session authenticated once
}

// GuardStats count what the server refused to bound one peer's state.
type GuardStats struct {
	TunnelsRefused  atomic.Uint64 // SCCRQ beyond MaxTunnelsPerPeer, or from no IPsec peer
	TunnelsTimedOut atomic.Uint64 // closed after UnauthTimeout without an authenticated session
	SessionsRefused atomic.Uint64 // a second unauthenticated session on one tunnel
	NoIdentity      atomic.Uint64 // sessions refused: no identity may log in after the peer's phase 1 (MethodsFor gave none)
	AuthHangups     atomic.Uint64 // PPP authentication failures that ended the peer's IKE SA
}

// serverMaxTunnels bounds the server's L2TP tunnels: every client brings
// its own tunnel, so l2tp's default (4096) would cap the sessions of a
// gateway; tunnel IDs are 16 bits (RFC 2661 §3.1). Half-open tunnels stay
// bounded per peer by l2tp.
const serverMaxTunnels = 1<<16 - 1

// GuardStats returns the counters of what the server refused per peer.
func (s *Server) GuardStats() *GuardStats { return &s.guard }

// peerOf finds the IPsec peer an L2TP address belongs to.
func (s *Server) peerOf(a net.Addr) *peerState {
	if ea, ok := a.(*esp.Addr); ok {
		if v, ok := s.byPeer.Load(ea.Peer()); ok {
			return v.(*peerState)
		}
	}
	return nil
}

// admitTunnel caps the L2TP tunnels of one IPsec peer (l2tp AdmitTunnel).
func (s *Server) admitTunnel(a net.Addr) bool {
	ps := s.peerOf(a)
	if ps == nil {
		s.guard.TunnelsRefused.Add(1)
		return false
	}
	s.mu.Lock()
	n := len(ps.tunnels)
	s.mu.Unlock()
	if n >= s.cfg.MaxTunnelsPerPeer {
		s.guard.TunnelsRefused.Add(1)
		s.log.Warn("L2TP tunnel refused: peer already has the maximum number of tunnels", "peer", ps.remote, "peer_id", ps.name,
			"tunnels", n, "max", s.cfg.MaxTunnelsPerPeer)
		return false
	}
	return true
}

// onTunnel tracks a new tunnel of a peer and closes it if no session has
// authenticated over it within UnauthTimeout.
func (s *Server) onTunnel(t *l2tp.Tunnel) {
	ps := s.peerOf(t.PeerAddr())
	if ps == nil {
		go func() { _ = t.Close() }()
		return
	}
	ts := &tunnelState{}
	s.mu.Lock()
	ps.tunnels[t] = ts
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tm := s.cfg.Clock.NewTimer(s.cfg.UnauthTimeout)
		defer tm.Stop()
		select {
		case <-t.Done():
		case <-s.stop:
		case <-tm.C():
			s.mu.Lock()
			authed := ts.authed
			s.mu.Unlock()
			if !authed {
				s.guard.TunnelsTimedOut.Add(1)
				s.log.Warn("L2TP tunnel closed: no authenticated session", "peer", ps.remote, "peer_id", ps.name,
					"tunnel_id", t.LocalID(), "after", s.cfg.UnauthTimeout)
				_ = t.Close()
			}
			<-t.Done()
		}
		s.mu.Lock()
		delete(ps.tunnels, t)
		s.mu.Unlock()
	}()
}
