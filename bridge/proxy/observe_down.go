// Observe, central → device (see observe.go): a central observer of a
// device resource, its CON notifications, retransmission and cancellation.

package proxy

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/fleetgate/fleetgate/downlink/coap"
)

// downObs is a central observer of a device resource.
type downObs struct {
	e        *endpointState
	key      string
	req      *pool.Message // the central registration (token, type, MID)
	from     net.Addr
	sess     *coap.Session
	answered chan struct{} // closed once the first response is in firstAns
	firstOut chan struct{} // closed once the first answer was written (or never will be)
	outOnce  sync.Once

	mu       sync.Mutex
	obs      observation // guarded by mu
	seq      uint32      // guarded by mu
	first    bool        // guarded by mu: the first response arrived
	firstAns answer      // guarded by mu: the answer it makes
	closed   bool        // guarded by mu
	final    bool        // guarded by mu: the final 5.03 was sent (finishDown)
	pendMID  int32       // guarded by mu: unacknowledged CON notification, -1 none
	pend     []byte      // guarded by mu
	tries    int         // guarded by mu
	timer    *time.Timer // guarded by mu
}

func (o *downObs) nextSeq() uint32 {
	o.seq = (o.seq + 1) & 0xFFFFFF
	return o.seq
}

// observeDown registers a central observer (msg has Observe:0) on the
// device's live session and returns the answer to the registration (the
// device's first response with our Observe number, or an error). done is
// false when the endpoint's observation bound is reached: the intake then
// relays the request once as a plain GET (RFC 7641 section 4.1).
func (p *Proxy) observeDown(e *endpointState, msg *pool.Message, from net.Addr) (a answer, done bool) {
	s := p.session(e.ep.Name)
	if s == nil {
		return codeAnswer(codes.GatewayTimeout), true
	}
	key := from.String() + "|" + string(msg.Token())
	o := &downObs{e: e, key: key, req: msg, from: from, sess: s, answered: make(chan struct{}), firstOut: make(chan struct{}), pendMID: -1}
	old, replaced, full := admitObservation(e, e.down, key, o, p.cfg.MaxObservations)
	if replaced {
		p.endDown(old, true)
	}
	if full {
		p.Stats.ObserveRefused.Add(1)
		p.warnf("observation limit reached, answering once", "endpoint", e.ep.Name, "peer", from.String())
		return answer{}, false
	}
	p.Stats.Downstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	req := s.Conn.AcquireMessage(ctx)
	path, _ := msg.Path()
	copyRequest(req, msg, path, nil)
	req.SetObserve(0)
	if tok, err := message.GetToken(); err == nil {
		req.SetToken(tok)
	}
	obs, err := s.Conn.DoObserve(req, func(n *pool.Message) { p.downNotify(o, n) })
	s.Conn.ReleaseMessage(req)
	// The first response (an error code too) reaches the callback maybe
	// just after DoObserve returned: wait for it unless the exchange timed
	// out or the session ended.
	select {
	case <-o.answered:
	case <-ctx.Done():
	case <-s.Conn.Done():
	}
	o.mu.Lock()
	answered, first := o.first, o.firstAns
	o.mu.Unlock()
	a = codeAnswer(codes.GatewayTimeout)
	if answered {
		a = first
	}
	// Notifications after the first wait in downNotify until this answer
	// left (writeAnswer calls sent), so the observer sees them in order.
	a.sent = func() { o.outOnce.Do(func() { close(o.firstOut) }) }
	if err != nil {
		if !answered {
			p.warnf("device observe failed", "endpoint", e.ep.Name, "err", err.Error())
		}
		p.endDown(o, false)
		return a, true
	}
	o.mu.Lock()
	o.obs = obs
	closed := o.closed
	o.mu.Unlock()
	switch {
	case closed: // ended while registering (RST, session down)
		p.cancelObs(obs)
	case obs.Canceled(): // the device answered without Observe
		p.endDown(o, false)
	default:
		p.Stats.ObservationsDown.Add(1)
	}
	return a, true
}

// downNotify takes one response or notification from the device: the
// first becomes the registration's answer (observeDown returns it), the
// later ones are sent to the central observer as notifications.
func (p *Proxy) downNotify(o *downObs, n *pool.Message) {
	c := contentOf(n)
	final := c.final(n.HasOption(message.Observe))
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	first := !o.first
	seq := o.nextSeq()
	if first {
		o.first = true
		o.firstAns = answer{c: c, obs: seq, hasObs: !final}
	}
	o.mu.Unlock()
	if first {
		close(o.answered)
	} else {
		select { // the registration's answer goes out first
		case <-o.firstOut:
		case <-p.ctx.Done():
			return
		}
		var obs *uint32
		if !final {
			obs = &seq
		}
		p.notifyCentral(o, c, obs)
	}
	if final {
		p.endDown(o, false)
	}
}

// notifyCentral sends a notification to the central observer: CON with
// retransmission, a final one NON.
func (p *Proxy) notifyCentral(o *downObs, c content, obs *uint32) {
	p.Stats.NotificationsDown.Add(1)
	m := centralMsg{typ: message.Confirmable, mid: message.GetMID(), token: o.req.Token(), c: c}
	if obs == nil {
		m.typ = message.NonConfirmable
	} else {
		m.observe, m.hasObs = *obs, true
	}
	// Block 0 only: the observer fetches the rest with Block2 GETs served
	// from the cache (RFC 7959 section 2.6).
	e := o.e
	b := p.encodeBlocked(e, m, 0, false, resourceKey(o.from, o.req))
	if b == nil {
		return
	}
	e.write(b, o.from)
	if obs == nil {
		return
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	prev := o.pendMID
	o.pendMID, o.pend = m.mid, b
	if o.timer == nil {
		o.tries = 0
		o.timer = time.AfterFunc(p.cfg.ObserveAckTimeout, func() { p.retransmit(o) })
	}
	o.mu.Unlock()
	e.mu.Lock()
	if prev >= 0 && e.downMID[prev] == o {
		delete(e.downMID, prev)
	}
	e.downMID[m.mid] = o
	e.mu.Unlock()
}

// retransmit resends the pending CON notification, or drops an observer
// that did not acknowledge MAX_RETRANSMIT retransmissions.
func (p *Proxy) retransmit(o *downObs) {
	o.mu.Lock()
	if o.closed || o.pendMID < 0 {
		o.timer = nil
		o.mu.Unlock()
		return
	}
	if o.tries >= maxRetransmit {
		o.mu.Unlock()
		p.Stats.ObserveTimeouts.Add(1)
		p.warnf("central observer stopped acknowledging, observation dropped", "endpoint", o.e.ep.Name, "peer", o.from.String())
		p.endDown(o, true)
		return
	}
	o.tries++
	b := o.pend
	o.timer.Reset(p.cfg.ObserveAckTimeout << o.tries)
	o.mu.Unlock()
	o.e.write(b, o.from)
}

// downAck handles an empty ACK or RST from a central peer.
func (p *Proxy) downAck(e *endpointState, mid int32, reset bool) {
	e.mu.Lock()
	o := e.downMID[mid]
	delete(e.downMID, mid)
	e.mu.Unlock()
	if o == nil {
		return
	}
	if reset {
		p.Stats.ObserveCancelled.Add(1)
		p.endDown(o, true)
		return
	}
	o.mu.Lock()
	if o.pendMID == mid {
		o.pendMID, o.pend = -1, nil
		if o.timer != nil {
			o.timer.Stop()
			o.timer = nil
		}
	}
	o.mu.Unlock()
}

// cancelDown ends the central observation key (Observe:1).
func (p *Proxy) cancelDown(e *endpointState, from net.Addr, token message.Token) {
	e.mu.Lock()
	o := e.down[from.String()+"|"+string(token)]
	e.mu.Unlock()
	if o != nil {
		p.Stats.ObserveCancelled.Add(1)
		p.endDown(o, true)
	}
}

// finishDown ends a central observation; when final it first sends the
// observer a final 5.03 (if onlyAnswered, only once the observation has
// been answered). The final notification goes at most once per
// observation, and never races the endpoint's close: the claim and the
// send run under the endpoint's finalMu, which close takes too, so a
// session ending while its endpoint is removed cannot leave the observer
// without its 5.03 (it could: sessionDown ended the observation, the
// removal found none left to notify and closed the endpoint, then
// sessionDown's notification was dropped as sent from a gone endpoint;
// TestReconcile failed so under load).
func (p *Proxy) finishDown(o *downObs, final, onlyAnswered, cancelDevice bool) {
	e := o.e
	e.finalMu.Lock()
	o.mu.Lock()
	send := final && !o.closed && !o.final && (!onlyAnswered || o.first)
	if send {
		o.final = true
	}
	o.mu.Unlock()
	if send {
		p.notifyCentral(o, content{code: codes.ServiceUnavailable}, nil)
	}
	e.finalMu.Unlock()
	p.endDown(o, cancelDevice)
}

// endDown forgets a central observation, cancelling the device's if asked.
func (p *Proxy) endDown(o *downObs, cancelDevice bool) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	obs, mid := o.obs, o.pendMID
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	o.mu.Unlock()
	forgetObs(p, o.e, o.e.down, o.e.downMID, o, o.key, mid, obs, cancelDevice)
}

// forgetObs removes o, an observation just closed, from its endpoint's
// tables (byKey, byMID: guarded by e.mu) and, if cancel, cancels its
// observation on the other side. It serves both directions (endDown,
// endUp).
func forgetObs[O comparable](p *Proxy, e *endpointState, byKey map[string]O, byMID map[int32]O, o O, key string, mid int32, obs observation, cancel bool) {
	e.mu.Lock()
	if byKey[key] == o {
		delete(byKey, key)
	}
	if mid >= 0 && byMID[mid] == o {
		delete(byMID, mid)
	}
	e.mu.Unlock()
	if cancel && obs != nil {
		p.cancelObs(obs)
	}
}
