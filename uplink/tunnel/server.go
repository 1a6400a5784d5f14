package tunnel

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Server is the responder side of the uplink: one ESP transport (UDP 500 and
// 4500), one IKE engine answering Main and Quick Modes, one L2TP LNS over
// the transport's L2TP PacketConn, and one PPP server per accepted session.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	eng atomic.Pointer[ike.Engine]
	mru atomic.Int64 // ServerConfig.MRU, SetMRU
	tr  *esp.Transport
	ep  *l2tp.Endpoint

	stats Stats
	espSt esp.Stats
	l2St  l2tp.Stats
	pppSt ppp.Stats

	byPeer sync.Map // *esp.Peer → *peerState, read on the data path

	guard GuardStats

	// mu guards the IPsec peers and the sessions.
	mu       sync.Mutex
	peers    map[*esp.Peer]*peerState
	children map[uint32]*peerState    // by inbound SPI
	pending  map[*ike.ChildSA]espPair // inbound installed at HASH(2), not yet up
	sessions map[*ServerSession]struct{}
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

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
	traffic  atomic.Bool
	// rekeys counts IPsec SA pairs installed to replace one of this peer
	// (make-before-break rekeys), for status pages.
	rekeys atomic.Uint64
}

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

// NewServer binds the sockets and starts answering.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		peers: map[*esp.Peer]*peerState{}, children: map[uint32]*peerState{}, pending: map[*ike.ChildSA]espPair{},
		sessions: map[*ServerSession]struct{}{}, stop: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stats = Stats{ESP: &s.espSt, L2TP: &s.l2St, PPP: &s.pppSt}
	s.mru.Store(int64(cfg.MRU))
	icfg := ike.Config{
		Clock: cfg.Clock, Logger: s.log.With("layer", "ike"), OnEvent: s.onEvent,
		PSK: cfg.PSK, Cert: cfg.Cert, CAs: cfg.CAs, CheckCert: cfg.CheckCert, AllowIdentity: cfg.AllowIdentity,
		ResponderPSKs: cfg.ResponderPSKs, PSKForID: cfg.PSKForID, BoundIdentity: cfg.BoundIdentity,
		LocalAddrFor: cfg.LocalAddrFor, LocalID: cfg.LocalID,
		MaxHalfOpen: cfg.MaxHalfOpen, HalfOpenTTL: cfg.HalfOpenTTL,
		RatePerSource: cfg.RatePerSource, BurstPerSource: cfg.BurstPerSource,
		MaxNegotiating: cfg.MaxNegotiating, Admit: cfg.Admit,
		MaxSAsPerSource: cfg.MaxSAsPerSource, MaxQuickModes: cfg.MaxQuickModes, MaxChildren: cfg.MaxChildren,
	}
	if kl := cfg.KeyLog; kl != nil {
		icfg.OnKeys = func(ic, _ [8]byte, key []byte) { _ = kl.LogIKEv1(ic, key) }
	}
	if err := cfg.IKEOptions.apply(&icfg); err != nil {
		return nil, err
	}
	// The transport comes first so that the engine learns the NAT-T port
	// actually bound; datagrams before the engine exists are dropped.
	tr, err := esp.NewTransport(esp.TransportConfig{
		IKEConn: cfg.IKEConn, NATTConn: cfg.NATTConn, IKEAddr: cfg.IKEAddr, NATTAddr: cfg.NATTAddr,
		Clock: cfg.Clock, KeepaliveInterval: cfg.KeepaliveInterval, Logger: s.log.With("layer", "esp"),
		RekeyGrace: rekeyGrace,
		IKE: esp.IKEHandlerFunc(func(b []byte, local, remote netip.AddrPort, natt bool) {
			if e := s.eng.Load(); e != nil {
				e.Input(b, local, remote, natt)
			}
		}),
	})
	if err != nil {
		return nil, &Error{PhaseTransport, err}
	}
	s.tr = tr
	s.stats.Transport = tr.Stats()
	icfg.NATTPort = tr.NATTAddr().Port()
	icfg.Sender = tr
	eng, err := ike.New(icfg)
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	s.stats.IKE = eng.Stats()
	s.eng.Store(eng)
	s.ep, err = l2tp.Listen(&noteConn{PacketConn: tr.L2TP(), onRead: s.noteRead},
		l2tp.Config{HostName: cfg.HostName, Clock: cfg.Clock, Logger: s.log.With("layer", "l2tp"), Stats: &s.l2St,
			MaxTunnels: serverMaxTunnels, AdmitTunnel: s.admitTunnel, OnTunnel: s.onTunnel})
	if err != nil {
		eng.Close()
		tr.Close()
		return nil, &Error{PhaseL2TP, err}
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		tickLoop(cfg.Clock, eng, s.stop, s.noteTraffic)
	}()
	go s.acceptLoop()
	s.log.Info("uplink server listening", "ike", tr.IKEAddr(), "natt", tr.NATTAddr())
	return s, nil
}

// IKEAddr and NATTAddr return the bound socket addresses.
func (s *Server) IKEAddr() netip.AddrPort { return s.tr.IKEAddr() }

// NATTAddr returns the bound NAT-T socket address.
func (s *Server) NATTAddr() netip.AddrPort { return s.tr.NATTAddr() }

// Stats returns the layers' counters (all sessions together).
func (s *Server) Stats() *Stats { return &s.stats }

// Sessions returns the sessions that reached IPCP and have not ended.
func (s *Server) Sessions() []*ServerSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*ServerSession, 0, len(s.sessions))
	for ss := range s.sessions {
		if ss.up.Load() {
			out = append(out, ss)
		}
	}
	return out
}

// PeerCount returns the IPsec peers with at least one SA pair installed.
func (s *Server) PeerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

// Close tells every peer to go (L2TP StopCCN, IKE Delete, without waiting
// for answers), so they reconnect at once, then stops everything.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		var all []*ServerSession
		for ss := range s.sessions {
			all = append(all, ss)
		}
		s.mu.Unlock()
		s.cancel()
		for _, ss := range all {
			ss.ppp.LowerDown()
		}
		_ = s.ep.Close() // StopCCN to every tunnel
		s.eng.Load().Close()
		close(s.stop)
		_ = s.tr.Close()
		s.wg.Wait()
		s.log.Info("uplink server closed")
	})
	return nil
}

func (s *Server) noteRead(a net.Addr) {
	if ea, ok := a.(*esp.Addr); ok {
		if v, ok := s.byPeer.Load(ea.Peer()); ok {
			if ps := v.(*peerState); !ps.traffic.Load() {
				ps.traffic.Store(true)
			}
		}
	}
}

// noteTraffic keeps DPD quiet towards peers whose ESP carried data.
func (s *Server) noteTraffic() {
	s.byPeer.Range(func(_, v any) bool {
		if ps := v.(*peerState); ps.traffic.Swap(false) {
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

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		sess, err := s.ep.Accept(s.ctx)
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serve(sess)
	}
}

// serve runs one PPP server over an accepted L2TP session until it ends.
func (s *Server) serve(sess *l2tp.Session) {
	defer s.wg.Done()
	ea, _ := sess.Tunnel().PeerAddr().(*esp.Addr)
	var ps *peerState
	if ea != nil {
		if v, ok := s.byPeer.Load(ea.Peer()); ok {
			ps = v.(*peerState)
		}
	}
	if ps == nil {
		s.log.Warn("L2TP session without IPsec peer", "peer", sess.Tunnel().PeerAddr())
		_ = sess.Close()
		return
	}
	ss := &ServerSession{srv: s, ps: ps, sess: sess, done: make(chan struct{}), abortCh: make(chan struct{})}
	attached := s.cfg.Clock.Now()
	log := s.log.With("peer", ps.remote, "peer_id", ps.name, "tunnel_id", sess.Tunnel().LocalID(), "session_id", sess.LocalID())
	methods := s.cfg.AuthMethods
	if s.cfg.MethodsFor != nil {
		if methods = s.cfg.MethodsFor(ps.id); len(methods) == 0 {
			// No identity may log in after this phase 1: a failed login.
			s.guard.NoIdentity.Add(1)
			log.Warn("L2TP session refused: no identity may log in after this phase 1 identity; closing the tunnel and the IKE SA")
			_ = sess.Close()
			s.hangup(ps, sess, ErrAuthHangup)
			return
		}
	}
	// At most one session per tunnel may be authenticating at a time.
	s.mu.Lock()
	ts := ps.tunnels[sess.Tunnel()]
	if ts != nil && ts.unauth > 0 {
		s.mu.Unlock()
		s.guard.SessionsRefused.Add(1)
		log.Warn("L2TP session refused: the tunnel already has a session that has not authenticated")
		_ = sess.Close()
		return
	}
	if ts != nil {
		ts.unauth++
	}
	s.mu.Unlock()
	authDone := sync.OnceFunc(func() {
		s.mu.Lock()
		if ts != nil {
			ts.unauth--
		}
		s.mu.Unlock()
	})
	defer authDone()
	// Frames the LAC sent before Attach set the handler were held by the
	// session (l2tp.MaxEarlyFrames) and reach PPP first; the LAC likewise
	// holds ours until its own PPP attaches.
	la := &linkAuth{auth: s.cfg.Authenticator, assign: s.cfg.AddressFunc, outer: ps.peer.Remote, ss: ss}
	mru := int(s.mru.Load())
	if s.cfg.MRUFor != nil {
		mru = s.cfg.MRUFor(ss, mru)
	}
	ss.ppp = ppp.Attach(sess, ppp.Config{
		Role: ppp.Server, MRU: mru, Methods: methods, Name: s.cfg.HostName,
		Authenticator: la, AssignAddress: la.Assign, LocalAddr: s.cfg.LocalAddr,
		EchoInterval: s.cfg.EchoInterval, EchoFailures: s.cfg.EchoFailures, IfaceID: s.cfg.IfaceID,
		Clock: s.cfg.Clock, Logger: log.With("layer", "ppp"), Stats: &s.pppSt,
		PacketHandler: ss.deliver, // before the first frame, not after Attach
	})
	s.mu.Lock()
	if s.closed || s.peers[ps.peer] != ps {
		s.mu.Unlock()
		ss.ppp.LowerDown()
		_ = sess.Close()
		return
	}
	s.sessions[ss] = struct{}{}
	ps.sessions[ss] = struct{}{}
	s.mu.Unlock()

	select {
	case <-ss.ppp.Up():
		ss.started = s.cfg.Clock.Now()
		ss.up.Store(true)
		s.mu.Lock()
		if ts != nil {
			ts.authed = true
		}
		s.mu.Unlock()
		authDone()
		info := ss.ppp.Info()
		log.Info("session established", "user", info.Username, "addr", info.Peer, "auth", info.Method)
		if s.cfg.OnSession != nil {
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.cfg.OnSession(ss) }()
		}
	case <-ss.ppp.Done():
	case <-sess.Done():
	case <-ss.abortCh:
	}
	select {
	case <-ss.ppp.Done():
	case <-sess.Done():
	case <-ss.abortCh:
	}
	var err error
	pppDone := false
	select {
	case <-ss.ppp.Done():
		pppDone = !errors.Is(ss.ppp.Err(), ppp.ErrLinkDown)
	default:
	}
	select {
	case <-ss.abortCh:
		ss.ppp.LowerDown()
		err = ss.abortErr
		// The SAs are gone: the tunnel cannot be told; let it go.
		s.wg.Add(1)
		go func() { defer s.wg.Done(); _ = sess.Tunnel().Close() }()
	default:
		if pppDone {
			perr := ss.ppp.Err()
			err = &Error{PhasePPP, perr}
			authFailed := errors.Is(perr, ppp.ErrAuthFailed) || errors.Is(perr, ppp.ErrAuthRejected) || errors.Is(perr, ppp.ErrAuthTimeout)
			if authFailed {
				err = &Error{PhasePPPAuth, perr}
			}
			_ = sess.Close() // CDN

		} else {
			ss.ppp.LowerDown()
			err = &Error{PhaseL2TP, sess.Err()}
		}
	}
	if ss.rejected.Load() && !ss.up.Load() {
		// One failed login ends the tunnel and the IKE SA, whichever side
		// closed first: each further guess costs the peer a new Main Mode.
		s.hangupAuthFailed(ps, sess, log)
	}
	s.mu.Lock()
	delete(s.sessions, ss)
	delete(ps.sessions, ss)
	s.mu.Unlock()
	ss.err = err
	// A session that never came up (failed login) has no start time: its
	// duration counts from the L2TP session's arrival, never from the zero
	// time (which logged "duration":9223372036854775807).
	since := attached
	if ss.up.Load() {
		since = ss.started
	}
	log.Info("session closed", "duration", s.cfg.Clock.Now().Sub(since), "established", ss.up.Load(), "reason", err,
		"packets_in", ss.in.Packets.Load(), "packets_out", ss.out.Packets.Load())
	close(ss.done)
}

// hangupAuthFailed ends the tunnel and the IKE SA of a peer that failed
// PPP authentication.
func (s *Server) hangupAuthFailed(ps *peerState, sess *l2tp.Session, log *slog.Logger) {
	s.guard.AuthHangups.Add(1)
	log.Warn("PPP authentication failed: closing the tunnel and the IKE SA")
	s.hangup(ps, sess, ErrAuthHangup)
}

// SetMRU sets the MRU new PPP sessions negotiate (ServerConfig.MRU; 0 for
// the PPP default), e.g. on a configuration reload.
func (s *Server) SetMRU(mru int) { s.mru.Store(int64(mru)) }

// SetProposals replaces the IKE and ESP proposals (comma-separated
// strongSwan strings, empty for the defaults) that new Main Modes and
// Quick Modes use, e.g. on a configuration reload; SAs already up keep
// what they negotiated.
func (s *Server) SetProposals(ikeList, espList string) error {
	ikes, err := parseList(ikeList, ike.ParseIKEProposal)
	if err != nil {
		return err
	}
	esps, err := parseList(espList, ike.ParseESPProposal)
	if err != nil {
		return err
	}
	e := s.eng.Load()
	if e == nil {
		return fmt.Errorf("%w: server not started", ErrConfig)
	}
	return e.SetProposals(ikes, esps)
}

// Hangup ends the session, its tunnel and the peer's IKE SA (telling the
// peer), e.g. when its certificate was revoked: the peer cannot open a
// new session over the old SA. It does not wait.
func (ss *ServerSession) Hangup(why error) {
	ss.srv.hangup(ss.ps, ss.sess, why)
}

// hangup closes a peer's tunnel (StopCCN, briefly waiting for its ack)
// and then deletes its IKE and IPsec SAs.
func (s *Server) hangup(ps *peerState, sess *l2tp.Session, why error) {
	s.mu.Lock()
	if s.closed { // Close tells every peer anyway
		s.mu.Unlock()
		return
	}
	var spi uint32
	if ps.current != nil {
		spi = ps.current.InSPI
	}
	s.wg.Add(1) // under s.mu: Close sets closed before it waits
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		// StopCCN first (its ack needs the SAs), then the SAs.
		t := sess.Tunnel()
		go func() { _ = t.Close() }()
		tm := s.cfg.Clock.NewTimer(authHangupGrace)
		select {
		case <-t.Done():
		case <-tm.C():
		}
		tm.Stop()
		if spi != 0 {
			s.eng.Load().HangupChild(spi, why)
		}
	}()
}

// ServerSession is one client's PPP session on the server, up after IPCP.
type ServerSession struct {
	srv  *Server
	ps   *peerState
	sess *l2tp.Session
	ppp  *ppp.Conn
	up   atomic.Bool
	// rejected: the Authenticator refused a login on this link.
	rejected atomic.Bool
	started  time.Time
	in, out  byteCounter
	handler  atomic.Pointer[func([]byte)]

	abortOnce sync.Once
	abortCh   chan struct{}
	abortErr  error
	done      chan struct{}
	err       error
}

func (ss *ServerSession) abort(err error) {
	ss.abortOnce.Do(func() { ss.abortErr = err; close(ss.abortCh) })
}

// Identity returns what the client proved in IKE phase 1.
func (ss *ServerSession) Identity() ike.Identity { return ss.ps.id }

// IdentityString returns the IKE identity as text (address, FQDN, user
// FQDN or certificate subject).
func (ss *ServerSession) IdentityString() string { return ss.ps.name }

// Username returns the PPP user the client authenticated as.
func (ss *ServerSession) Username() string { return ss.ppp.Info().Username }

// Outer returns the client's current outer address (NAT-T).
func (ss *ServerSession) Outer() netip.AddrPort { return ss.ps.peer.Remote() }

// IPv6Up is closed when IPV6CP has opened with this client (its
// assignment had IPv6); Info then carries both interface identifiers.
func (ss *ServerSession) IPv6Up() <-chan struct{} { return ss.ppp.IPv6Up() }

// Addr returns the IPCP address the client was assigned.
func (ss *ServerSession) Addr() netip.Addr { return ss.ppp.Info().Peer }

// Info returns the negotiated PPP parameters.
func (ss *ServerSession) Info() ppp.Info { return ss.ppp.Info() }

// Suite returns the ESP suite of the pair currently sending to the client.
func (ss *ServerSession) Suite() esp.Suite {
	if sa := ss.ps.peer.Outbound(); sa != nil {
		return sa.Suite()
	}
	return esp.Suite{}
}

// L2TPIDs returns our tunnel and session IDs.
func (ss *ServerSession) L2TPIDs() (tunnel, session uint16) {
	return ss.sess.Tunnel().LocalID(), ss.sess.LocalID()
}

// PeerImplementation is the client's implementation as peerid recognises
// it from its Main Mode vendor IDs and its L2TP Host-Name/Vendor-Name
// AVPs: one of peerid.Kinds.
func (ss *ServerSession) PeerImplementation() string {
	o := peerid.Observations{IKE: ss.ps.peerKind}
	o.L2TPHost, o.L2TPVendor = ss.sess.Tunnel().PeerNames()
	return string(peerid.Classify(o))
}

// Started returns when IPCP opened.
func (ss *ServerSession) Started() time.Time { return ss.started }

// Rekeys returns how many times the IPsec SA pair of this session's peer
// was replaced by a rekey.
func (ss *ServerSession) Rekeys() uint64 { return ss.ps.rekeys.Load() }

// WritePacket sends one IPv4 packet to the client.
func (ss *ServerSession) WritePacket(pkt []byte) error {
	if err := ss.ppp.WritePacket(pkt); err != nil {
		return err
	}
	ss.out.add(len(pkt))
	return nil
}

// SetPacketHandler sets the function receiving the client's IPv4 packets
// (valid only during the call; must not block).
func (ss *ServerSession) SetPacketHandler(fn func(pkt []byte)) {
	if fn == nil {
		ss.handler.Store(nil)
		return
	}
	ss.handler.Store(&fn)
}

func (ss *ServerSession) deliver(pkt []byte) {
	ss.in.add(len(pkt))
	if h := ss.handler.Load(); h != nil {
		(*h)(pkt)
	}
}

// Counters returns the IPv4 packets and bytes received from and sent to
// the client.
func (ss *ServerSession) Counters() (packetsIn, bytesIn, packetsOut, bytesOut uint64) {
	return ss.in.Packets.Load(), ss.in.Bytes.Load(), ss.out.Packets.Load(), ss.out.Bytes.Load()
}

// Done is closed when the session has ended; Err then says why.
func (ss *ServerSession) Done() <-chan struct{} { return ss.done }

// Err returns why the session ended (an *Error), nil while it runs.
func (ss *ServerSession) Err() error {
	select {
	case <-ss.done:
		return ss.err
	default:
		return nil
	}
}

// Close ends the session from our side: PPP Terminate, CDN, and StopCCN
// for its tunnel (the client's LAC holds one session per tunnel). It waits
// until the session is gone, at most about CloseTimeout when the client
// has gone quiet.
func (ss *ServerSession) Close() error {
	s := ss.srv
	polite := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = ss.ppp.Close()
		_ = ss.sess.Close()
		<-ss.done
		close(polite)
		_ = ss.sess.Tunnel().Close() // StopCCN; its ack may never come
	}()
	tm := s.cfg.Clock.NewTimer(CloseTimeout)
	defer tm.Stop()
	select {
	case <-polite:
	case <-tm.C():
		ss.abort(&Error{PhaseNone, ErrClosed})
		<-ss.done
	}
	return nil
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

// linkKey is the context key of the per-link auth values.
type linkKey struct{}

// PeerOuter returns the outer address (IP:port, after the NAT-T float) of
// the client whose PPP link a ServerConfig.Authenticator or AddressFunc
// call is for, e.g. for RADIUS Calling-Station-Id.
func PeerOuter(ctx context.Context) (netip.AddrPort, bool) {
	l, ok := ctx.Value(linkKey{}).(*linkAuth)
	if !ok {
		return netip.AddrPort{}, false
	}
	return l.outer(), true
}

// PeerSession returns the session whose PPP link a ServerConfig
// Authenticator or AddressFunc call is for. Until OnSession hands it over,
// only SetPacketHandler may be used: a handler set while the link
// authenticates gets the client's packets from the moment IPCP opens
// (the client may send before OnSession has run; without a handler those
// packets are dropped).
func PeerSession(ctx context.Context) (*ServerSession, bool) {
	l, ok := ctx.Value(linkKey{}).(*linkAuth)
	if !ok {
		return nil, false
	}
	return l.ss, true
}

// linkAuth is one PPP link's view of the configured Authenticator and
// AddressFunc: their context carries the link (PeerOuter, PeerSession).
// ppp.Conn passes its own per-link context to both calls; the derived
// context is made once per parent, so the two calls of a link see one
// context value (callers may key per-link state by it).
type linkAuth struct {
	auth   ppp.Authenticator
	assign ppp.AddressFunc
	outer  func() netip.AddrPort
	ss     *ServerSession

	mu          sync.Mutex
	parent, ctx context.Context
}

func (l *linkAuth) with(ctx context.Context) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.parent != ctx {
		l.parent, l.ctx = ctx, context.WithValue(ctx, linkKey{}, l)
	}
	return l.ctx
}

// Authenticate implements ppp.Authenticator.
func (l *linkAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	res, err := l.auth.Authenticate(l.with(ctx), req)
	if err == nil && !res.Accept {
		l.ss.rejected.Store(true)
	}
	return res, err
}

// Assign is the link's ppp.AddressFunc.
func (l *linkAuth) Assign(ctx context.Context, user string) (ppp.Assignment, error) {
	return l.assign(l.with(ctx), user)
}
