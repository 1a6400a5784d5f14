// The server's IPsec peers: IKE events install and remove their ESP SAs
// (the responder counterpart of client_sa.go).

package l2tpipsec

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/peerid"
)

// peerState is one IPsec peer (one client, even when several share a NAT).
type peerState struct {
	peer     *esp.Peer
	remote   netip.AddrPort
	id       ike.Identity
	name     string
	peerKind peerid.Kind // from the first child's Main Mode vendor IDs
	children map[uint32]*ike.ChildSA
	current  *ike.ChildSA
	sessions map[*ServerSession]struct{}
	tunnels  map[*l2tp.Tunnel]*tunnelState // live L2TP tunnels of this peer
	// rekeys counts IPsec SA pairs installed to replace one of this peer
	// (make-before-break rekeys), for status pages.
	rekeys atomic.Uint64
}

// noteTraffic keeps DPD quiet towards peers whose ESP carried data.
func (s *Server) noteTraffic() {
	s.byPeer.Range(func(_, v any) bool {
		if ps := v.(*peerState); ps.peer.TakeReceived() {
			s.eng.Load().NoteTraffic(ps.peer.Remote().Addr())
		}
		return true
	})
}

// onEvent keeps the transport's SA table in step with IKE.
func (s *Server) onEvent(ev ike.Event) {
	switch ev.Kind {
	case ike.EventIKEUp:
		s.log.Info("IKE SA up", "peer", ev.Remote, "peer_id", idString(ev.Peer))
	case ike.EventIKEDown:
		s.log.Debug("IKE SA down", "peer", ev.Remote, "reason", ev.Err)
	case ike.EventChildInbound:
		s.installInbound(ev)
	case ike.EventChildUp, ike.EventChildRekeyed:
		s.install(ev)
	case ike.EventChildDown:
		s.remove(ev.Child, ev.Err)
	case ike.EventAuthFailed:
		if f := s.cfg.OnIKEAuthFailed; f != nil {
			f(ev.Remote, ev.Peer, ev.Err)
		}
	}
}

// peerFor finds the peer a child belongs to: the rekeyed child's, or the
// one with the same outer address and identity (a further Quick Mode from
// the same client replaces its pair); nil means a new peer. s.mu is held.
func (s *Server) peerFor(ev ike.Event) *peerState {
	c := ev.Child
	if ps := s.children[c.InSPI]; ps != nil {
		return ps
	}
	if ev.Old != nil {
		if ps := s.children[ev.Old.InSPI]; ps != nil {
			return ps
		}
	}
	for _, o := range s.peers {
		if o.remote == c.Remote && idString(o.id) == idString(c.Peer) {
			return o
		}
	}
	return nil
}

// addPeer adds a new peer, without SAs yet. s.mu is held.
func (s *Server) addPeer(c *ike.ChildSA) (*peerState, error) {
	name := idString(c.Peer)
	p, err := s.tr.NewPeer(esp.PeerConfig{Remote: c.Remote, LocalPort: L2TPPort, RemotePort: c.Selectors.RemotePort, Name: name})
	if err != nil {
		return nil, err
	}
	ps := &peerState{peer: p, remote: c.Remote, id: c.Peer, name: name, peerKind: c.PeerKind,
		children: map[uint32]*ike.ChildSA{}, sessions: map[*ServerSession]struct{}{}, tunnels: map[*l2tp.Tunnel]*tunnelState{}}
	s.peers[p] = ps
	s.byPeer.Store(p, ps)
	return ps, nil
}

// dropPeerLocked forgets a peer that never got a pair. s.mu is held.
func (s *Server) dropPeerLocked(ps *peerState) {
	delete(s.peers, ps.peer)
	s.byPeer.Delete(ps.peer)
	s.tr.RemovePeer(ps.peer)
}

// installInbound installs the inbound SA of a Quick Mode we answer as
// HASH(2) leaves: the client sends on it right after its HASH(3), and that
// ESP can overtake HASH(3) in the transport (RFC 2409 §5.5). The pair
// becomes current on ChildUp or ChildRekeyed.
func (s *Server) installInbound(ev ike.Event) {
	c := ev.Child
	in, out, err := newPair(c, s.eng.Load(), &s.espSt)
	if err != nil {
		s.log.Warn("cannot make ESP SAs", "peer", ev.Remote, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	ps := s.peerFor(ev)
	if ps == nil {
		if ps, err = s.addPeer(c); err != nil {
			s.log.Warn("cannot add ESP peer", "peer", c.Remote, "err", err)
			return
		}
	}
	// out sends from the client's first packet on in (it has the pair,
	// so our replies need not wait for HASH(3)), or from ChildUp.
	if err = s.tr.AddInbound(ps.peer, in, out); err != nil {
		s.log.Warn("cannot install inbound ESP SA", "peer", c.Remote, "err", err)
		if len(ps.children) == 0 {
			s.dropPeerLocked(ps)
		}
		return
	}
	s.pending[c] = espPair{in, out}
	s.children[c.InSPI] = ps
}

// install makes a child's pair current, its outbound SA at once: when we
// answered, our inbound SA was installed with HASH(2); when we sent
// HASH(3), the client installed its inbound SA before its HASH(2).
func (s *Server) install(ev ike.Event) {
	c := ev.Child
	s.mu.Lock()
	pair, ok := s.pending[c]
	delete(s.pending, c)
	s.mu.Unlock()
	if !ok {
		var err error
		if pair.in, pair.out, err = newPair(c, s.eng.Load(), &s.espSt); err != nil {
			s.log.Warn("cannot make ESP SAs", "peer", ev.Remote, "err", err)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	ps := s.peerFor(ev)
	var err error
	if ps == nil {
		if ps, err = s.addPeer(c); err != nil {
			s.log.Warn("cannot add ESP peer", "peer", c.Remote, "err", err)
			return
		}
	}
	if err = s.tr.Activate(ps.peer, pair.in, pair.out); err != nil {
		s.log.Warn("cannot install ESP SAs", "peer", c.Remote, "err", err)
		if len(ps.children) == 0 {
			s.dropPeerLocked(ps)
		}
		return
	}
	ps.children[c.InSPI] = c
	ps.current = c
	s.children[c.InSPI] = ps
	if ev.Old != nil {
		ps.rekeys.Add(1)
	}
	logKeys(s.cfg.KeyLog, c)
	s.log.Info("IPsec SA installed", "peer", c.Remote, "peer_id", ps.name, "suite", c.Suite,
		"spi_in", fmt.Sprintf("%08x", c.InSPI), "spi_out", fmt.Sprintf("%08x", c.OutSPI), "rekey", ev.Old != nil)
}

// remove drops an SA pair; when a peer's last pair goes, its L2TP tunnels
// and PPP sessions go too.
func (s *Server) remove(c *ike.ChildSA, why error) {
	s.tr.RemovePair(c.InSPI, c.OutSPI)
	s.mu.Lock()
	delete(s.pending, c)
	ps := s.children[c.InSPI]
	delete(s.children, c.InSPI)
	var gone []*ServerSession
	last := false
	if ps != nil {
		delete(ps.children, c.InSPI)
		if len(ps.children) == 0 {
			last = true
			delete(s.peers, ps.peer)
			s.byPeer.Delete(ps.peer)
			for ss := range ps.sessions {
				gone = append(gone, ss)
			}
		} else if ps.current == c {
			for _, o := range ps.children {
				if ps.current == c || o.Established.After(ps.current.Established) {
					ps.current = o
				}
			}
		}
	}
	s.mu.Unlock()
	if ps == nil {
		return
	}
	if !last {
		if ps.peer.Outbound() == nil {
			go s.eng.Load().RekeyChild(ps.current.InSPI)
		}
		return
	}
	s.log.Info("IPsec peer gone", "peer", ps.remote, "peer_id", ps.name, "reason", why, "sessions", len(gone))
	reason := fmt.Errorf("%w: %w", ErrIPsecLost, why)
	for _, ss := range gone {
		ss.abort(&Error{PhaseIPsec, reason})
	}
	s.tr.RemovePeer(ps.peer)
}

// idString renders an IKE identity for logs and matching.
func idString(id ike.Identity) string {
	if id.Cert != nil {
		return id.Cert.Subject.String()
	}
	if a, ok := id.ID.Addr(); ok {
		return a.String()
	}
	switch id.ID.Type {
	case ike.IDFQDN, ike.IDUserFQDN, ike.IDKeyID:
		return string(id.ID.Data)
	}
	return hex.EncodeToString(id.ID.Data)
}
