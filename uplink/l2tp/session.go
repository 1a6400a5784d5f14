package l2tp

import (
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// sessionState is an incoming-call session state (RFC 2661 §7.4.1 LAC,
// §7.4.2 LNS).
//
//	LAC: idle --OpenSession, send ICRQ--> waitReply --recv ICRP, send ICCN--> established
//	LNS: idle --recv ICRQ, send ICRP--> waitConnect --recv ICCN--> established
//	any --send or recv CDN, or StopCCN--> closed
type sessionState uint8

const (
	ssIdle        sessionState = iota // not yet started
	ssWaitReply                       // LAC: ICRQ sent
	ssWaitConnect                     // LNS: ICRP sent
	ssEstablished                     // PPP frames may flow
	ssClosed                          // gone
)

// Session is one call (one PPP link) inside a tunnel. Frames written with
// WriteFrame go out as L2TP data messages; received frames are passed to
// the handler set with SetFrameHandler.
type Session struct {
	t       *Tunnel // nil when driven by a bare core in tests
	c       *core
	localID uint16

	// Data path, read without the owner goroutine.
	peerID  atomic.Uint32 // published before up is set
	up      atomic.Bool
	seq     atomic.Bool   // send Ns on data messages (Sequencing Required)
	dataNs  atomic.Uint32 // next data Ns
	handler atomic.Pointer[func([]byte)]
	stats   *Stats

	// Frames that arrived before a handler was set (an LNS attaches PPP
	// only after Accept returns, while the LAC's first Configure-Request
	// may already be on its way): at most MaxEarlyFrames, delivered in
	// order by SetFrameHandler. earlyMu also orders that flush before any
	// later frame.
	earlyMu sync.Mutex
	early   [][]byte

	// Owned by the owner goroutine.
	state    sessionState
	deadline time.Time
	serial   uint32

	upCh     chan struct{} // closed when established
	done     chan struct{} // closed when closed
	doneOnce sync.Once
	err      error // close reason, set before done is closed
}

func newSession(c *core, id uint16) *Session {
	return &Session{t: c.tunnel, c: c, localID: id, stats: c.stats, upCh: make(chan struct{}), done: make(chan struct{})}
}

// LocalID returns our session ID.
func (s *Session) LocalID() uint16 { return s.localID }

// PeerID returns the peer's session ID (0 until it is known).
func (s *Session) PeerID() uint16 { return uint16(s.peerID.Load()) }

// Tunnel returns the tunnel the session belongs to.
func (s *Session) Tunnel() *Tunnel { return s.t }

// SetFrameHandler sets the function receiving PPP frames. The slice is
// valid only during the call. It runs on the endpoint's reader goroutine
// and must not block. Frames received before the first handler was set
// (up to MaxEarlyFrames, see Stats.DataQueued) are passed to fn first, on
// the caller's goroutine, before SetFrameHandler returns.
func (s *Session) SetFrameHandler(fn func(frame []byte)) {
	s.earlyMu.Lock()
	defer s.earlyMu.Unlock()
	q := s.early
	s.early = nil
	for _, p := range q {
		if !s.up.Load() {
			s.stats.DataDropped.Add(1)
			continue
		}
		s.stats.DataReceived.Add(1)
		fn(p)
	}
	s.handler.Store(&fn)
}

// Done is closed when the session has ended; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns the close reason once Done is closed (nil before).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// deliverFrame passes a received data payload to the handler.
func (s *Session) deliverFrame(p []byte) {
	h := s.handler.Load()
	if h == nil {
		s.earlyMu.Lock()
		if h = s.handler.Load(); h == nil {
			s.queueEarly(p)
			s.earlyMu.Unlock()
			return
		}
		s.earlyMu.Unlock()
	}
	if !s.up.Load() {
		s.stats.DataDropped.Add(1)
		return
	}
	s.stats.DataReceived.Add(1)
	(*h)(p)
}

// queueEarly keeps a copy of a frame that came before any handler; the
// caller holds earlyMu.
func (s *Session) queueEarly(p []byte) {
	select {
	case <-s.done:
		s.stats.DataDropped.Add(1)
		return
	default:
	}
	if len(s.early) >= MaxEarlyFrames {
		s.stats.DataDropped.Add(1)
		return
	}
	s.early = append(s.early, append([]byte(nil), p...))
	s.stats.DataQueued.Add(1)
}

func (s *Session) closed(err error) {
	s.doneOnce.Do(func() {
		s.up.Store(false)
		s.err = err
		close(s.done)
	})
}

// allocSessionID picks a free non-zero random session ID.
func (c *core) allocSessionID() (uint16, bool) {
	var b [2]byte
	for range 64 {
		if _, err := io.ReadFull(c.cfg.Rand, b[:]); err != nil {
			return 0, false
		}
		id := binary.BigEndian.Uint16(b[:])
		if id != 0 && c.sessions[id] == nil {
			return id, true
		}
	}
	return 0, false
}

func (c *core) addSession(s *Session) {
	c.smu.Lock()
	c.sessions[s.localID] = s
	c.smu.Unlock()
}

func (c *core) removeSession(s *Session) {
	c.smu.Lock()
	delete(c.sessions, s.localID)
	c.smu.Unlock()
}

// lookupSession is the data path's concurrent lookup.
func (c *core) lookupSession(id uint16) *Session {
	c.smu.RLock()
	s := c.sessions[id]
	c.smu.RUnlock()
	return s
}

// OpenSession places an incoming call (LAC, §6.7): it sends ICRQ and
// returns the session, which comes up when ICRP arrives and ICCN is sent.
func (c *core) OpenSession(now time.Time) (*Session, error) {
	c.now = now
	if c.role != LAC {
		return nil, ErrFSM // an LNS takes incoming calls, it does not place them
	}
	if c.state != tsEstablished {
		return nil, ErrNotEstablished
	}
	if len(c.sessions) >= c.cfg.MaxSessions {
		return nil, ErrTooMany
	}
	id, ok := c.allocSessionID()
	if !ok {
		return nil, ErrTooMany
	}
	s := newSession(c, id)
	c.nextSerial++
	s.serial = c.nextSerial
	s.state = ssWaitReply
	s.deadline = now.Add(c.cfg.SetupTimeout)
	c.addSession(s)
	m := &Message{Type: MsgICRQ}
	m.AddUint16(AVPAssignedSessionID, id)
	m.AddUint32(AVPCallSerialNumber, s.serial)
	m.AddUint32(AVPBearerType, 0)
	c.enqueue(0, m)
	return s, nil
}

// CloseSession sends CDN result 3 (administrative, §6.11) for s.
func (c *core) CloseSession(now time.Time, s *Session) {
	c.now = now
	if s.state == ssClosed {
		return
	}
	c.closeSession(s, CDNAdmin, ErrCodeNone, &ResultError{Err: ErrClosed, Result: CDNAdmin})
}

// closeSession sends CDN and removes s.
func (c *core) closeSession(s *Session, result, code uint16, err error) {
	if s.state == ssClosed {
		return
	}
	if c.state == tsEstablished {
		m := &Message{Type: MsgCDN}
		m.Add(AVPResultCode, ResultCodeValue(result, code, ""))
		m.AddUint16(AVPAssignedSessionID, s.localID)
		c.enqueue(s.PeerID(), m)
	}
	c.endSession(s, err)
}

func (c *core) endSession(s *Session, err error) {
	was := s.state
	s.state = ssClosed
	c.removeSession(s)
	c.stats.SessionsClosed.Add(1)
	c.log.Info("session closed", "session_id", s.localID, "peer_session_id", s.PeerID(), "reason", err)
	s.closed(err)
	if was == ssEstablished && c.ev.sessionDown != nil {
		c.ev.sessionDown(s, err)
	}
}

// dropSessions ends every session without CDN (the StopCCN covers them).
func (c *core) dropSessions(err error) {
	for _, s := range c.sessions {
		c.endSession(s, err)
	}
}

func (c *core) sessionEstablished(s *Session) {
	s.state = ssEstablished
	s.up.Store(true)
	c.stats.SessionsEstablished.Add(1)
	c.log.Info("session established", "session_id", s.localID, "peer_session_id", s.PeerID())
	close(s.upCh)
	if c.ev.sessionUp != nil {
		c.ev.sessionUp(s)
	}
}

// sessionTimers closes sessions whose setup did not finish in time.
func (c *core) sessionTimers() {
	for _, s := range c.sessions {
		if s.state != ssEstablished && !c.now.Before(s.deadline) {
			c.closeSession(s, CDNGeneralError, ErrCodeNone, &ResultError{Err: ErrSetupTimeout})
		}
	}
}

// sessionMessage handles the call-management messages (§6.6-§6.14).
func (c *core) sessionMessage(h Header, m *Message) {
	s := c.sessions[h.SessionID]
	switch m.Type {
	case MsgICRQ:
		c.recvICRQ(m)
		return
	case MsgOCRQ:
		// We place no outgoing calls: refuse with CDN (§6.1 framing, §6.11).
		if psid, ok := m.Uint16(AVPAssignedSessionID); ok {
			r := &Message{Type: MsgCDN}
			r.Add(AVPResultCode, ResultCodeValue(CDNPermResources, ErrCodeNone, "outgoing calls not supported"))
			r.AddUint16(AVPAssignedSessionID, 0)
			c.enqueue(psid, r)
		}
		return
	}
	if s == nil {
		c.stats.UnknownSession.Add(1)
		c.warnLimit.warn(c.log, c.now, "message for unknown session", "msg_type", m.Type, "session_id", h.SessionID)
		return
	}
	switch m.Type {
	case MsgICRP:
		if c.role != LAC || s.state != ssWaitReply {
			c.closeSession(s, CDNGeneralError, ErrCodeNone, &ResultError{Err: ErrFSM})
			return
		}
		psid, ok := m.Uint16(AVPAssignedSessionID)
		if !ok || psid == 0 {
			c.closeSession(s, CDNGeneralError, ErrCodeLength, &ResultError{Err: ErrMissingAVP})
			return
		}
		s.peerID.Store(uint32(psid))
		r := &Message{Type: MsgICCN}
		r.AddUint32(AVPTxConnectSpeed, 100000000)
		r.AddUint32(AVPFramingType, FramingSync)
		c.enqueue(psid, r)
		c.sessionEstablished(s)
	case MsgICCN:
		if c.role != LNS || s.state != ssWaitConnect {
			c.closeSession(s, CDNGeneralError, ErrCodeNone, &ResultError{Err: ErrFSM})
			return
		}
		if m.Find(AVPSequencingRequired) != nil {
			s.seq.Store(true)
		}
		c.sessionEstablished(s)
	case MsgCDN:
		res, code, msg, _ := m.ResultCode()
		c.endSession(s, &ResultError{Err: ErrPeerCDN, Result: res, Code: code, Message: msg})
	case MsgWEN:
		c.stats.WENReceived.Add(1)
	case MsgSLI:
		c.stats.SLIReceived.Add(1)
	default:
		c.stats.UnexpectedMessage.Add(1)
	}
}

func (c *core) recvICRQ(m *Message) {
	if c.role != LNS {
		c.stats.UnexpectedMessage.Add(1)
		return
	}
	psid, ok := m.Uint16(AVPAssignedSessionID)
	if !ok || psid == 0 {
		c.stats.UnexpectedMessage.Add(1)
		return
	}
	refuse := func(result uint16, msg string) {
		r := &Message{Type: MsgCDN}
		r.Add(AVPResultCode, ResultCodeValue(result, ErrCodeNone, msg))
		r.AddUint16(AVPAssignedSessionID, 0)
		c.enqueue(psid, r)
	}
	if len(c.sessions) >= c.cfg.MaxSessions || (c.ev.sessionRequest != nil && !c.ev.sessionRequest()) {
		refuse(CDNTempResources, "too many sessions")
		return
	}
	id, ok := c.allocSessionID()
	if !ok {
		refuse(CDNTempResources, "no session ID")
		return
	}
	s := newSession(c, id)
	s.peerID.Store(uint32(psid))
	s.state = ssWaitConnect
	s.deadline = c.now.Add(c.cfg.SetupTimeout)
	c.addSession(s)
	r := &Message{Type: MsgICRP}
	r.AddUint16(AVPAssignedSessionID, id)
	c.enqueue(psid, r)
}
