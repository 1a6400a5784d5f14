package l2tpipsec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

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
	s.ep, err = l2tp.Listen(tr.L2TP(),
		l2tp.Config{HostName: cfg.HostName, Clock: cfg.Clock, Logger: s.log.With("layer", "l2tp"), Stats: &s.l2St,
			MaxTunnels: serverMaxTunnels, AdmitTunnel: s.admitTunnel, OnTunnel: s.onTunnel})
	if err != nil {
		eng.Close()
		tr.Close()
		return nil, &Error{PhaseL2TP, err}
	}
	// L2TP straight from the ESP reader: no copy and hand-off per packet.
	// Dead peer detection learns of the traffic from the ESP peers'
	// marks (noteTraffic), not from a lookup per packet here.
	ep := s.ep
	tr.SetL2TPHandler(func(b []byte, from *esp.Addr) { ep.Input(b, from) })
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		tickLoop(cfg.Clock, eng, s.stop, s.noteTraffic)
	}()
	go s.acceptLoop()
	s.log.Info("uplink server listening", "ike", tr.IKEAddr(), "natt", tr.NATTAddr())
	return s, nil
}

// Hold and Release bracket a burst of packets written back to back to
// sessions (esp.Transport.Hold): the gateway's router holds the transport
// while it routes one split TUN read.
func (s *Server) Hold() { s.tr.Hold() }

// Release ends a Hold (esp.Transport.Release).
func (s *Server) Release() { s.tr.Release() }

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
