package coap

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// Parking (issue 19 item 2): a live session costs pion's two goroutines
// (handshake FSM and read loop), go-coap's conn goroutine, its caches and
// the guard conn's queue; a device that speaks once a minute needs none of
// that between exchanges. After ParkAfter without traffic in either
// direction, with nothing in flight and no observation (Config.Busy), the
// session is parked: its DTLS state is exported (pion's ConnectionState:
// keys' inputs, epoch, sequence numbers, CIDs) and the conn closed, so the
// endpoint holds a parkedSession (no goroutine, no buffer) reachable by
// CID and by address in the guard and by name in the server.
//
// The next record from the device (any address: CID) or the next request
// from the bridge (Server.Session) resumes it: dtls.ResumeWithOptions over a
// new guard conn, handed to go-coap like an accepted conn, without a
// handshake. All record crypto stays in pion.
//
// Key and nonce safety (pion's warning on ResumeWithOptions): the old conn
// must never send a record after the export. The guard conn is marked
// parking under the guard lock BEFORE the export, and from then on drops
// every write (its close_notify included): any sequence number pion takes
// after the mark belongs to a record that never leaves, and any it took
// before is in the export (pion increments before it writes). Records that
// arrive while parking are held (at most maxHeld) and replayed into the
// resumed conn. Each export is resumed at most once (parkedSession.woken,
// under the guard lock).

// maxHeld bounds the datagrams held for a session while it is parked.
const maxHeld = 8

// resumeTimeout bounds starting a resumed conn.
const resumeTimeout = 30 * time.Second

// parkedSession is an idle session's exported DTLS state.
type parkedSession struct {
	ep      registry.Endpoint
	state   dtls.State
	suite   dtls.CipherSuiteID
	raddr   net.Addr // where the device was last heard from
	cid     string   // the CID the device puts in its records; "" if none
	started time.Time
	// counters carried into the resumed Session
	lastSeen, lastActive int64
	bytesIn, bytesOut    uint64
	rebinds              uint64

	woken bool          // guarded by guard mu: resumed (or dropped); single use
	ready chan struct{} // closed when the resume ended (sess set on success)
	sess  atomic.Pointer[Session]
}

// holdIfParking returns c, or nil after holding the datagram when c's
// session is being parked (it then goes to the resumed conn).
func (l *guardListener) holdIfParking(c *guardConn, raddr net.Addr, b []byte) *guardConn {
	if !c.parking {
		return c
	}
	if len(c.held) < maxHeld {
		c.held = append(c.held, packet{b: append([]byte(nil), b...), from: raddr})
	}
	return nil
}

// unparkLocked takes p out of the parked maps and gives it a new conn
// (already routed by address and CID) to resume on.
func (l *guardListener) unparkLocked(p *parkedSession, raddr net.Addr) *guardConn {
	l.dropParkedLocked(p)
	p.woken = true
	gc := &guardConn{l: l, raddr: raddr, src: addrPort(raddr).Addr(), cid: p.cid, order: l.s.connSeq.Add(1),
		in: make(chan packet, guardQueue), done: make(chan struct{}), rdl: deadline.New(), wdl: deadline.New()}
	if l.conns[raddr.String()] == nil {
		l.conns[raddr.String()] = gc
	} else {
		gc.raddrFreed = true
	}
	if p.cid != "" {
		l.conns["cid:"+p.cid] = gc
	}
	return gc
}

func (l *guardListener) dropParkedLocked(p *parkedSession) {
	if p.cid != "" && l.parked["cid:"+p.cid] == p {
		delete(l.parked, "cid:"+p.cid)
	}
	if k := p.raddr.String(); l.parked[k] == p {
		delete(l.parked, k)
	}
}

// dropParked forgets p for good (endpoint removed, replaced by a new
// handshake, expired); it reports whether p was still parked.
func (l *guardListener) dropParked(p *parkedSession) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.woken {
		return false
	}
	p.woken = true
	l.dropParkedLocked(p)
	close(p.ready)
	return true
}

// parker parks idle sessions and expires parked ones, until Close.
func (s *Server) parker() {
	defer s.wg.Done()
	every := 10 * time.Second
	if s.cfg.ParkAfter > 0 {
		every = min(max(s.cfg.ParkAfter/4, 100*time.Millisecond), every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastSave := time.Now()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		now := time.Now()
		if s.cfg.ParkAfter > 0 {
			for _, sess := range s.Sessions() {
				if now.Sub(time.Unix(0, sess.lastActive.Load())) >= s.cfg.ParkAfter {
					s.park(sess)
				}
			}
		}
		s.expireParked(now)
		if s.stateKey != nil && now.Sub(lastSave) >= s.cfg.SaveInterval {
			lastSave = now
			if err := s.saveState(); err != nil {
				s.warnf("dtls session state not saved", "err", err.Error())
			}
		}
	}
}

// expireParked drops parked sessions idle for IdleTimeout, as go-coap's
// inactivity monitor closes live ones.
func (s *Server) expireParked(now time.Time) {
	var old []*parkedSession
	s.mu.Lock()
	for name, p := range s.parked {
		if now.Sub(time.Unix(0, p.lastActive)) >= s.cfg.IdleTimeout {
			old = append(old, p)
			delete(s.parked, name)
		}
	}
	s.mu.Unlock()
	for _, p := range old {
		if s.guard.dropParked(p) {
			s.Stats.ParkedExpired.Add(1)
		}
	}
}

// park exports an idle session's state and closes its conn; it reports
// whether the session was parked.
func (s *Server) park(sess *Session) bool { return s.parkNow(sess, false) }

// parkNow parks sess; force (Close with a state file) parks it even with
// exchanges in flight or observations (they end with the server).
func (s *Server) parkNow(sess *Session, force bool) bool {
	if !force && (sess.inflight.Load() > 0 || (s.cfg.Busy != nil && s.cfg.Busy(sess.Endpoint.Name))) {
		return false
	}
	c, ok := sess.Conn.NetConn().(*conn)
	if !ok || c.gc == nil {
		return false
	}
	gc, l := c.gc, s.guard
	l.mu.Lock()
	if gc.parking || gc.pending || (!force && len(gc.in) > 0) {
		l.mu.Unlock()
		return false
	}
	gc.parking = true
	l.mu.Unlock()
	undo := func() {
		l.mu.Lock()
		gc.parking = false
		held := gc.held
		gc.held = nil
		l.mu.Unlock()
		for _, p := range held {
			select {
			case gc.in <- p:
			default:
			}
		}
	}
	if !force && sess.inflight.Load() > 0 { // an exchange started meanwhile
		undo()
		return false
	}
	st, ok := c.Conn.ConnectionState()
	if !ok {
		undo()
		return false
	}
	p := &parkedSession{ep: sess.Endpoint, state: st, suite: sess.Suite, raddr: c.Conn.RemoteAddr(), started: sess.started,
		lastSeen: sess.lastSeen.Load(), lastActive: sess.lastActive.Load(), bytesIn: sess.BytesIn.Load(), bytesOut: sess.BytesOut.Load(),
		rebinds: sess.rebinds.Load(), ready: make(chan struct{})}
	sess.parked.Store(true)
	l.mu.Lock()
	p.cid = gc.cid
	l.forgetLocked(gc)
	if p.cid != "" {
		l.parked["cid:"+p.cid] = p
	}
	l.parked[p.raddr.String()] = p
	held := gc.held
	gc.held = nil
	var wake *guardConn
	if len(held) > 0 && !force {
		wake = l.unparkLocked(p, held[len(held)-1].from)
	}
	l.mu.Unlock()
	s.mu.Lock()
	if s.sessions[sess.Endpoint.Name] == sess {
		delete(s.sessions, sess.Endpoint.Name)
	}
	s.parked[sess.Endpoint.Name] = p
	s.mu.Unlock()
	s.Stats.Parked.Add(1)
	_ = sess.Conn.Close() // go-coap and pion go; their close_notify is dropped by gc
	if wake != nil && !force {
		for _, h := range held {
			wake.in <- h // len(held) <= maxHeld < guardQueue
		}
		go s.resume(p, wake)
	}
	return true
}

// resume restores p's DTLS state over gc and hands the conn to go-coap;
// onNewConn then publishes the Session and closes p.ready.
func (s *Server) resume(p *parkedSession, gc *guardConn) {
	s.mu.Lock()
	if s.parked[p.ep.Name] == p {
		delete(s.parked, p.ep.Name)
	}
	s.mu.Unlock()
	fail := func(err error) {
		s.Stats.ResumeFailures.Add(1)
		s.warnf("parked session could not be resumed", "endpoint", p.ep.Name, "err", err.Error())
		_ = gc.Close()
		close(p.ready)
	}
	st := p.state
	dc, err := dtls.ResumeWithOptions(&st, gc, gc.raddr, s.resumeOpts...)
	if err != nil {
		fail(err)
		return
	}
	// Generous: it only waits for pion's handshake goroutine to start, but a
	// restart storm runs thousands of these at once. (559 of 10,000 resumes
	// failed in a storm on a loaded 2-core box with 5 s; the bench logs
	// nothing, so that timeout is the suspect, not a proven cause.)
	ctx, cancel := context.WithTimeout(context.Background(), resumeTimeout)
	err = dc.HandshakeContext(ctx) // resumed state: starts pion's loops, sends nothing
	cancel()
	if err != nil {
		_ = dc.Close()
		fail(err)
		return
	}
	c := &conn{Conn: dc, s: s, done: true, ep: p.ep, suite: p.suite, gc: gc, woke: p, seq: gc.order}
	select {
	case s.resumed <- c:
	case <-s.quit:
		_ = dc.Close()
		fail(net.ErrClosed)
	}
}

// wake resumes a parked session for the bridge (a request to the device)
// and returns it, or nil if it could not be resumed.
func (s *Server) wake(p *parkedSession) *Session {
	l := s.guard
	l.mu.Lock()
	var gc *guardConn
	if !p.woken {
		gc = l.unparkLocked(p, p.raddr)
	}
	l.mu.Unlock()
	if gc != nil {
		go s.resume(p, gc)
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.ready:
		return p.sess.Load()
	case <-t.C:
		return nil
	case <-s.quit:
		return nil
	}
}

// notifyParked sends close_notify on every parked session (Close without a
// state file: devices learn of the restart at once, as live ones do).
func (s *Server) notifyParked() {
	s.mu.Lock()
	ps := make([]*parkedSession, 0, len(s.parked))
	for _, p := range s.parked {
		ps = append(ps, p)
	}
	s.parked = map[string]*parkedSession{}
	s.mu.Unlock()
	l := s.guard
	for _, p := range ps {
		l.mu.Lock()
		var gc *guardConn
		if !p.woken {
			gc = l.unparkLocked(p, p.raddr)
		}
		l.mu.Unlock()
		if gc == nil {
			continue
		}
		st := p.state
		dc, err := dtls.ResumeWithOptions(&st, gc, gc.raddr, s.resumeOpts...)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if dc.HandshakeContext(ctx) == nil {
				_ = dc.Close() // close_notify
			}
			cancel()
		}
		_ = gc.Close()
	}
}
