package l2tp

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tunnelState is the control connection state (RFC 2661 §7.2).
//
//	LAC (initiator)                         LNS (responder)
//	idle --send SCCRQ--> waitCtlReply       idle --recv SCCRQ, send SCCRP--> waitCtlConn
//	waitCtlReply --recv SCCRP, send SCCCN-->    waitCtlConn --recv SCCCN--> established
//	                         established
//	any --admin close, send StopCCN--> closing --acked--> dead
//	any --recv StopCCN, ack--> linger --Linger elapsed--> dead
//	any --retransmits exhausted or setup timeout--> dead
type tunnelState uint8

const (
	tsIdle         tunnelState = iota // nothing sent or received yet
	tsWaitCtlReply                    // LAC: SCCRQ sent
	tsWaitCtlConn                     // LNS: SCCRP sent
	tsEstablished                     // SCCCN sent (LAC) or received (LNS)
	tsClosing                         // our StopCCN awaits its ack
	tsLinger                          // peer's StopCCN received; re-acking retransmissions
	tsDead                            // finished; the core ignores all input
)

var tunnelStateNames = [...]string{"idle", "wait-ctl-reply", "wait-ctl-conn", "established", "closing", "linger", "dead"}

// String names the state.
func (s tunnelState) String() string {
	if int(s) < len(tunnelStateNames) {
		return tunnelStateNames[s]
	}
	return "state?"
}

// coreEvents are the core's notifications to whoever drives it. They run on
// the owner goroutine and must not block.
type coreEvents struct {
	established func()
	closed      func(err error)
	sessionUp   func(s *Session)
	sessionDown func(s *Session, err error)
	// sessionRequest is asked (LNS) whether a new incoming call may be
	// accepted; nil accepts.
	sessionRequest func() bool
}

// core is one tunnel's pure protocol state: control connection, tunnel FSM
// and session FSMs. Nothing in it blocks, reads a clock or owns a
// goroutine: it is driven by Input and Tick and emits through send.
type core struct {
	cfg   *Config
	role  Role
	log   *slog.Logger
	stats *Stats
	send  func([]byte) error
	ev    coreEvents
	// tunnel is the runtime wrapper (nil when a test drives the core).
	tunnel *Tunnel

	// pubPeerID publishes peerID to the data path (Session.WriteFrame2)
	// and other goroutines; peerID itself is the owner's.
	pubPeerID atomic.Uint32
	// peerNames publishes the peer's Host-Name and Vendor-Name AVPs
	// (capped, peerid.KeepName) to other goroutines.
	peerNames atomic.Pointer[[2]string]

	// Owned by the owner goroutine.
	now           time.Time
	state         tunnelState
	localID       uint16
	peerID        uint16
	peerHost      string
	r             reliable
	lastRecv      time.Time
	lastHello     time.Time
	setupDeadline time.Time
	lingerUntil   time.Time
	closeErr      error
	challenge     []byte // the challenge we sent, if any
	nextSerial    uint32
	warnLimit     rateLimitedLog

	// sessions is written only by the owner goroutine; smu lets the data
	// path (the endpoint's reader goroutine) look sessions up concurrently.
	smu      sync.RWMutex
	sessions map[uint16]*Session
}

func newCore(cfg *Config, role Role, localID uint16, send func([]byte) error, ev coreEvents, now time.Time) *core {
	c := &core{
		cfg: cfg, role: role, stats: cfg.Stats, send: send, ev: ev,
		now: now, localID: localID, lastRecv: now, lastHello: now,
		setupDeadline: now.Add(cfg.SetupTimeout),
		sessions:      map[uint16]*Session{},
	}
	c.r.peerWindow = defaultPeerWindow
	c.log = cfg.Logger.With("tunnel_id", localID, "role", role.String())
	return c
}

// Start sends the SCCRQ (LAC).
func (c *core) Start(now time.Time) {
	c.now = now
	m := c.sccMessage(MsgSCCRQ)
	if len(c.cfg.Secret) > 0 {
		c.challenge = make([]byte, 16)
		if _, err := io.ReadFull(c.cfg.Rand, c.challenge); err != nil {
			c.finish(err)
			return
		}
		m.Add(AVPChallenge, c.challenge)
	}
	c.state = tsWaitCtlReply
	c.enqueue(0, m)
}

// sccMessage builds the common AVPs of SCCRQ and SCCRP (§6.1, §6.2).
func (c *core) sccMessage(t MessageType) *Message {
	m := &Message{Type: t}
	m.Add(AVPProtocolVersion, []byte{1, 0})
	m.AddUint32(AVPFramingCapabilities, FramingSync|FramingAsync)
	m.AddUint32(AVPBearerCapabilities, 0)
	m.AVPs = append(m.AVPs, AVP{Type: AVPFirmwareRevision, Value: []byte{0x01, 0x00}})
	m.Add(AVPHostName, []byte(c.cfg.HostName))
	if c.cfg.VendorName != "" {
		m.AddOptional(AVPVendorName, []byte(c.cfg.VendorName))
	}
	m.AddUint16(AVPAssignedTunnelID, c.localID)
	m.AddUint16(AVPReceiveWindowSize, c.cfg.ReceiveWindow)
	return m
}

// challengeResponse computes MD5(type || secret || challenge) (§4.2 with
// the CHAP construction of RFC 1994 §4.1; the ID is the message type the
// response travels in).
func challengeResponse(t MessageType, secret, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{byte(t)})
	h.Write(secret)
	h.Write(challenge)
	return h.Sum(nil)
}

// deliver processes one in-sequence control message.
func (c *core) deliver(h Header, m *Message, unknown *UnknownAVPError) {
	c.stats.ControlReceived.Add(1)
	c.log.Debug("recv", "msg_type", m.Type, "ns", h.Ns, "nr", h.Nr, "state", c.state)
	if unknown != nil {
		c.stats.UnknownMandatoryAVP.Add(1)
		c.warnLimit.warn(c.log, c.now, "unknown mandatory AVP", "msg_type", m.Type, "avp", unknown.Type, "vendor", unknown.Vendor)
		if m.Type.sessionScoped() {
			if s := c.sessions[h.SessionID]; s != nil {
				c.closeSession(s, CDNGeneralError, ErrCodeUnknownMandatory, &ResultError{Err: ErrUnknownMandatory, Result: CDNGeneralError, Code: ErrCodeUnknownMandatory})
			}
			return
		}
		c.fail(StopGeneralError, ErrCodeUnknownMandatory, "unknown mandatory AVP", &ResultError{Err: ErrUnknownMandatory, Result: StopGeneralError, Code: ErrCodeUnknownMandatory})
		return
	}
	if w, ok := m.Uint16(AVPReceiveWindowSize); ok && w > 0 && (m.Type == MsgSCCRQ || m.Type == MsgSCCRP) {
		c.r.peerWindow = int(w)
	}
	switch m.Type {
	case MsgSCCRQ:
		c.recvSCCRQ(m)
	case MsgSCCRP:
		c.recvSCCRP(m)
	case MsgSCCCN:
		c.recvSCCCN(m)
	case MsgStopCCN:
		c.recvStopCCN(m)
	case MsgHELLO:
		// Acknowledged like any message; nothing else to do (§6.5).
	case MsgICRQ, MsgICRP, MsgICCN, MsgCDN, MsgWEN, MsgSLI, MsgOCRQ, MsgOCRP, MsgOCCN:
		if c.state != tsEstablished {
			c.unexpected(m)
			return
		}
		c.sessionMessage(h, m)
	default:
		if m.TypeOptional {
			return // unknown, not mandatory: ignore (§4.4.1)
		}
		c.fail(StopGeneralError, ErrCodeRange, "unknown message type", &ResultError{Err: ErrFSM, Result: StopGeneralError, Code: ErrCodeRange})
	}
}

func (c *core) unexpected(m *Message) {
	c.stats.UnexpectedMessage.Add(1)
	c.warnLimit.warn(c.log, c.now, "unexpected control message", "msg_type", m.Type, "state", c.state)
	if c.state == tsClosing || c.state == tsLinger {
		return
	}
	c.fail(StopFSMError, ErrCodeNone, "", &ResultError{Err: ErrFSM, Result: StopFSMError})
}

func (c *core) recvSCCRQ(m *Message) {
	if c.role != LNS || c.state != tsIdle {
		c.unexpected(m)
		return
	}
	if !c.notePeer(m) {
		return
	}
	if a := m.Find(AVPProtocolVersion); a == nil || !bytes.Equal(a.Value, []byte{1, 0}) {
		c.fail(StopBadVersion, ErrCodeNone, "", &ResultError{Err: ErrBadVersion, Result: StopBadVersion})
		return
	}
	reply := c.sccMessage(MsgSCCRP)
	if !c.answerChallenge(m, reply) {
		return
	}
	if len(c.cfg.Secret) > 0 {
		c.challenge = make([]byte, 16)
		if _, err := io.ReadFull(c.cfg.Rand, c.challenge); err != nil {
			c.finish(err)
			return
		}
		reply.Add(AVPChallenge, c.challenge)
	}
	c.state = tsWaitCtlConn
	c.enqueue(0, reply)
}

// notePeer takes the peer's Assigned Tunnel ID and names from its SCCRQ or
// SCCRP; false means the ID is missing and the tunnel has failed.
func (c *core) notePeer(m *Message) bool {
	ptid, ok := m.Uint16(AVPAssignedTunnelID)
	if !ok || ptid == 0 {
		c.fail(StopGeneralError, ErrCodeLength, "Assigned Tunnel ID missing", &ResultError{Err: ErrMissingAVP})
		return false
	}
	c.peerID = ptid
	c.pubPeerID.Store(uint32(ptid))
	c.noteHost(m)
	return true
}

// answerChallenge adds to reply (our SCCRP or SCCCN) the response to the
// Challenge AVP of the peer's m, if it sent one (RFC 2661 §4.2); false
// means we have no secret to answer with and the tunnel has failed.
func (c *core) answerChallenge(m *Message, reply *Message) bool {
	ch := m.Find(AVPChallenge)
	if ch == nil {
		return true
	}
	if len(c.cfg.Secret) == 0 {
		c.stats.AuthFailures.Add(1)
		c.fail(StopNotAuthorized, ErrCodeNone, "no tunnel secret", &ResultError{Err: ErrAuthFailed, Result: StopNotAuthorized})
		return false
	}
	reply.Add(AVPChallengeResponse, challengeResponse(reply.Type, c.cfg.Secret, ch.Value))
	return true
}

func (c *core) noteHost(m *Message) {
	var names [2]string
	if a := m.Find(AVPHostName); a != nil {
		c.peerHost = peerid.KeepName(string(a.Value))
		names[0] = c.peerHost
		c.log = c.log.With("peer_tunnel_id", c.peerID, "peer_host", c.peerHost)
	}
	if a := m.Find(AVPVendorName); a != nil {
		names[1] = peerid.KeepName(string(a.Value))
	}
	c.peerNames.Store(&names)
	kind := peerid.Classify(peerid.Observations{L2TPHost: names[0], L2TPVendor: names[1]})
	c.stats.PeersByKind.Add(kind)
	c.log = c.log.With("peer_impl", kind)
}

// checkResponse verifies the peer's answer to our challenge.
func (c *core) checkResponse(m *Message, t MessageType) bool {
	if c.challenge == nil {
		return true
	}
	a := m.Find(AVPChallengeResponse)
	if a != nil && bytes.Equal(a.Value, challengeResponse(t, c.cfg.Secret, c.challenge)) {
		return true
	}
	c.stats.AuthFailures.Add(1)
	c.log.Warn("tunnel authentication failed", "msg_type", m.Type)
	c.fail(StopNotAuthorized, ErrCodeNone, "", &ResultError{Err: ErrAuthFailed, Result: StopNotAuthorized})
	return false
}

func (c *core) recvSCCRP(m *Message) {
	if c.role != LAC || c.state != tsWaitCtlReply {
		c.unexpected(m)
		return
	}
	if !c.notePeer(m) {
		return
	}
	if !c.checkResponse(m, MsgSCCRP) {
		return
	}
	reply := &Message{Type: MsgSCCCN}
	if !c.answerChallenge(m, reply) {
		return
	}
	c.enqueue(0, reply)
	c.establish()
}

func (c *core) recvSCCCN(m *Message) {
	if c.role != LNS || c.state != tsWaitCtlConn {
		c.unexpected(m)
		return
	}
	if !c.checkResponse(m, MsgSCCCN) {
		return
	}
	c.establish()
}

func (c *core) establish() {
	c.state = tsEstablished
	c.stats.TunnelsEstablished.Add(1)
	c.log.Info("tunnel established", "peer_tunnel_id", c.peerID)
	if c.ev.established != nil {
		c.ev.established()
	}
}

func (c *core) recvStopCCN(m *Message) {
	res, code, msg, _ := m.ResultCode()
	err := &ResultError{Err: ErrPeerStop, Result: res, Code: code, Message: msg}
	c.log.Info("peer sent StopCCN", "result", res, "error_code", code, "message", msg)
	c.dropSessions(err)
	c.state = tsLinger
	c.closeErr = err
	c.lingerUntil = c.now.Add(c.cfg.Linger)
	// Our own unacknowledged messages no longer matter.
	c.r.queue = nil
	c.r.rtxAt = time.Time{}
}

// Close starts an orderly teardown with StopCCN result 1 (§5.7).
func (c *core) Close(now time.Time, result, code uint16, reason error) {
	c.now = now
	switch c.state {
	case tsDead, tsClosing, tsLinger:
		return
	case tsIdle:
		c.finish(reason)
		return
	}
	c.fail(result, code, "", reason)
}

// fail sends StopCCN and waits for its acknowledgement.
func (c *core) fail(result, code uint16, msg string, err error) {
	if c.state == tsDead || c.state == tsClosing {
		return
	}
	c.log.Info("closing tunnel", "result", result, "error_code", code, "reason", err)
	c.dropSessions(err)
	c.closeErr = err
	if c.peerID == 0 && c.role == LAC {
		c.finish(err) // no peer tunnel yet: nothing to tell
		return
	}
	// Drop queued messages not yet sent: StopCCN supersedes them.
	q := c.r.queue[:0]
	for _, o := range c.r.queue {
		if o.sent {
			q = append(q, o)
		}
	}
	c.r.queue = q
	c.state = tsClosing
	m := &Message{Type: MsgStopCCN}
	m.AddUint16(AVPAssignedTunnelID, c.localID)
	m.Add(AVPResultCode, ResultCodeValue(result, code, msg))
	c.enqueue(0, m)
}

// finish ends the tunnel for good.
func (c *core) finish(err error) {
	if c.state == tsDead {
		return
	}
	c.dropSessions(err)
	c.state = tsDead
	c.closeErr = err
	c.r.queue = nil
	c.r.rtxAt = time.Time{}
	c.stats.TunnelsClosed.Add(1)
	c.log.Info("tunnel closed", "reason", err)
	if c.ev.closed != nil {
		c.ev.closed(err)
	}
}

// afterAck is called after acknowledgements: a closing tunnel whose
// StopCCN is acknowledged is finished.
func (c *core) afterAck() {
	if c.state == tsClosing && len(c.r.queue) == 0 {
		c.finish(c.closeErr)
	}
}

// peerTunnelKey identifies a tunnel from the peer's side, for SCCRQ
// retransmissions: transport address plus the peer's tunnel ID.
func peerTunnelKey(addr net.Addr, ptid uint16) string {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], ptid)
	return addr.Network() + "|" + addr.String() + "|" + string(b[:])
}
