package l2tp

import (
	"encoding/binary"
	"errors"
	"time"
)

// This file is the reliable delivery half of the tunnel core (RFC 2661
// §5.8). Every control message but the ZLB carries Ns; Nr acknowledges all
// messages before it. Up to the peer's Receive Window Size messages are in
// flight; the oldest unacknowledged one is retransmitted on a timeout that
// starts at RetransmitInitial and doubles up to RetransmitCap, and after
// MaxRetransmits the tunnel is declared dead. When nothing is sent in reply
// to a message, a ZLB acknowledges it at once.

// seqLess reports a < b in 16-bit serial arithmetic (§5.8).
func seqLess(a, b uint16) bool { return int16(a-b) < 0 }

// outMsg is a queued control message, fully encoded; Nr is patched in at
// each transmission.
type outMsg struct {
	ns   uint16
	typ  MessageType
	b    []byte
	sent bool
}

// reliable is the per-tunnel control channel state. Owned by the tunnel's
// owner goroutine (or the test driving the core).
type reliable struct {
	nextNs     uint16 // Ns of the next new message
	nr         uint16 // next Ns expected from the peer
	peerWindow int
	queue      []*outMsg // unacknowledged, in Ns order
	rtxAt      time.Time // zero when nothing is in flight
	rtxTimeout time.Duration
	rtxCount   int
	ackOwed    bool
	ooo        map[uint16][]byte // received ahead of nr, copied
}

// enqueue encodes m for tunnel peerTID / session sid and sends it if the
// window allows.
func (c *core) enqueue(sid uint16, m *Message) {
	h := Header{TunnelID: c.peerID, SessionID: sid, Ns: c.r.nextNs}
	b, err := AppendControl(nil, h, m, c.cfg.Secret, c.cfg.Rand)
	if err != nil {
		c.log.Error("encode control message", "msg_type", m.Type, "err", err)
		return
	}
	o := &outMsg{ns: c.r.nextNs, typ: m.Type, b: b}
	c.r.nextNs++
	c.r.queue = append(c.r.queue, o)
	c.pump()
}

// pump transmits queued messages the window allows.
func (c *core) pump() {
	for i, o := range c.r.queue {
		if i >= c.r.peerWindow {
			break
		}
		if !o.sent {
			o.sent = true
			c.stats.ControlSent.Add(1)
			c.transmit(o)
		}
	}
	if len(c.r.queue) > 0 && c.r.rtxAt.IsZero() {
		c.r.rtxTimeout = c.cfg.RetransmitInitial
		c.r.rtxAt = c.now.Add(c.r.rtxTimeout)
	}
}

func (c *core) transmit(o *outMsg) {
	binary.BigEndian.PutUint16(o.b[10:], c.r.nr)
	c.r.ackOwed = false
	c.log.Debug("send", "msg_type", o.typ, "ns", o.ns, "nr", c.r.nr)
	if err := c.send(o.b); err != nil {
		c.log.Debug("send failed", "err", err)
	}
}

// sendZLB acknowledges everything received so far.
func (c *core) sendZLB() {
	b, _ := AppendControl(make([]byte, 0, ControlHeaderLen), Header{TunnelID: c.peerID, Ns: c.r.nextNs, Nr: c.r.nr}, &Message{}, nil, nil)
	c.r.ackOwed = false
	c.stats.ZLBSent.Add(1)
	c.stats.ControlSent.Add(1)
	if err := c.send(b); err != nil {
		c.log.Debug("send failed", "err", err)
	}
}

// ack drops queued messages acknowledged by nr and restarts the
// retransmission clock if anything was acknowledged.
func (c *core) ack(nr uint16) {
	n := 0
	for n < len(c.r.queue) && seqLess(c.r.queue[n].ns, nr) && c.r.queue[n].sent {
		n++
	}
	if n == 0 {
		return
	}
	c.r.queue = append(c.r.queue[:0], c.r.queue[n:]...)
	c.r.rtxCount = 0
	c.r.rtxAt = time.Time{}
	c.pump()
	c.afterAck()
}

// retransmitDue handles the retransmission deadline: resend what is in
// flight with a doubled timeout, or give up.
func (c *core) retransmitDue() {
	if c.r.rtxAt.IsZero() || c.now.Before(c.r.rtxAt) {
		return
	}
	if len(c.r.queue) == 0 {
		c.r.rtxAt = time.Time{}
		return
	}
	c.r.rtxCount++
	if c.r.rtxCount > c.cfg.MaxRetransmits {
		c.stats.TunnelsTimedOut.Add(1)
		c.log.Warn("peer stopped acknowledging", "msg_type", c.r.queue[0].typ, "retransmits", c.cfg.MaxRetransmits)
		if c.state == tsClosing {
			c.finish(c.closeErr)
			return
		}
		c.finish(&ResultError{Err: ErrTimeout})
		return
	}
	for i, o := range c.r.queue {
		if i >= c.r.peerWindow || !o.sent {
			break
		}
		c.stats.ControlRetransmits.Add(1)
		c.transmit(o)
	}
	c.r.rtxTimeout = min(2*c.r.rtxTimeout, c.cfg.RetransmitCap)
	c.r.rtxAt = c.now.Add(c.r.rtxTimeout)
}

// Input feeds one control datagram (already known to be for this tunnel)
// to the core at time now.
func (c *core) Input(now time.Time, b []byte) {
	c.now = now
	if c.state == tsDead {
		return
	}
	h, m, err := ParseControl(b, c.cfg.Secret)
	var unknown *UnknownAVPError
	if err != nil && !errors.As(err, &unknown) {
		c.stats.MalformedDropped.Add(1)
		c.warnLimit.warn(c.log, now, "malformed control message dropped", "err", err)
		return
	}
	c.lastRecv = now
	c.ack(h.Nr)
	if c.state == tsDead {
		return
	}
	if m.Type == MsgZLB {
		c.afterInput()
		return
	}
	switch {
	case h.Ns == c.r.nr:
		c.r.nr++
		c.r.ackOwed = true
		c.deliver(h, &m, unknown)
		// Deliver anything buffered that is now in sequence.
		for c.state != tsDead {
			nb, ok := c.r.ooo[c.r.nr]
			if !ok {
				break
			}
			delete(c.r.ooo, c.r.nr)
			h2, m2, err2 := ParseControl(nb, c.cfg.Secret)
			var u2 *UnknownAVPError
			errors.As(err2, &u2)
			c.r.nr++
			c.ack(h2.Nr)
			c.deliver(h2, &m2, u2)
		}
	case seqLess(h.Ns, c.r.nr):
		c.stats.ControlDuplicates.Add(1)
		c.r.ackOwed = true
	default:
		if int(h.Ns-c.r.nr) >= int(c.cfg.ReceiveWindow) || len(c.r.ooo) >= int(c.cfg.ReceiveWindow) {
			c.stats.ControlOutOfWindow.Add(1)
			break
		}
		if c.r.ooo == nil {
			c.r.ooo = map[uint16][]byte{}
		}
		if _, dup := c.r.ooo[h.Ns]; dup {
			c.stats.ControlDuplicates.Add(1)
			break
		}
		c.stats.ControlOutOfOrder.Add(1)
		c.r.ooo[h.Ns] = append([]byte(nil), b...)
	}
	c.afterInput()
}

// afterInput sends a ZLB if something received is still unacknowledged.
func (c *core) afterInput() {
	if c.r.ackOwed && c.state != tsDead {
		c.sendZLB()
	}
}

// Tick runs timers at time now: retransmission, HELLO, setup and session
// deadlines, and the linger of a closed tunnel.
func (c *core) Tick(now time.Time) {
	c.now = now
	if c.state == tsDead {
		return
	}
	c.retransmitDue()
	if c.state == tsDead {
		return
	}
	if c.state == tsLinger && !now.Before(c.lingerUntil) {
		c.finish(c.closeErr)
		return
	}
	if c.state != tsEstablished && c.state != tsClosing && c.state != tsLinger && !now.Before(c.setupDeadline) {
		c.stats.TunnelsTimedOut.Add(1)
		c.fail(StopGeneralError, ErrCodeNone, "setup timeout", &ResultError{Err: ErrSetupTimeout})
		return
	}
	if c.state == tsEstablished {
		if len(c.r.queue) == 0 && !now.Before(c.lastRecv.Add(c.cfg.HelloInterval)) && !now.Before(c.lastHello.Add(c.cfg.HelloInterval)) {
			c.lastHello = now
			c.stats.HellosSent.Add(1)
			c.enqueue(0, &Message{Type: MsgHELLO})
		}
		c.sessionTimers()
	}
}

// NextDeadline returns when Tick must next run (zero: nothing scheduled).
func (c *core) NextDeadline() time.Time {
	var d time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	switch c.state {
	case tsDead:
		return time.Time{}
	case tsLinger:
		at(c.lingerUntil)
	case tsEstablished:
		hello := c.lastRecv.Add(c.cfg.HelloInterval)
		if h2 := c.lastHello.Add(c.cfg.HelloInterval); h2.After(hello) {
			hello = h2
		}
		at(hello)
		for _, s := range c.sessions {
			if s.state != ssEstablished {
				at(s.deadline)
			}
		}
	case tsClosing:
	default:
		at(c.setupDeadline)
	}
	at(c.r.rtxAt)
	return d
}
