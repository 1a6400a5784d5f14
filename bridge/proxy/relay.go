package proxy

// The last stage central → device: a central request the exchange stage
// admitted (and observe.go / block.go did not answer themselves) is sent
// over the device's DTLS session, or queued while the device sleeps, and
// the answer goes back to the central requester through respond, which
// records it for duplicates (exchange.go).

import (
	"context"
	"net"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// relay sends one central request over the device's DTLS session and the
// answer back to the central requester.
func (p *Proxy) relay(e *endpointState, msg *pool.Message, from net.Addr) {
	if v, err := msg.Observe(); err == nil && v == 0 && msg.Code() == codes.GET && !hasBlock2Follow(msg) {
		p.observeDown(e, msg, from)
		return
	}
	s := p.session(e.ep.Name)
	if s == nil {
		p.reply(e, msg, from, codes.GatewayTimeout, nil)
		return
	}
	p.Stats.Downstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	req := s.Conn.AcquireMessage(ctx)
	defer s.Conn.ReleaseMessage(req)
	path, _ := msg.Path()
	copyRequest(req, msg, path, nil)
	tok, err := message.GetToken()
	if err == nil {
		req.SetToken(tok)
	}
	resp, err := s.Do(req)
	if err != nil {
		p.warnf("device request failed", "endpoint", e.ep.Name, "err", err.Error())
		p.reply(e, msg, from, codes.GatewayTimeout, nil)
		return
	}
	defer s.Conn.ReleaseMessage(resp)
	p.reply(e, msg, from, resp.Code(), resp)
}

// reply answers a central request with code and, if resp is not nil, its
// options and body.
func (p *Proxy) reply(e *endpointState, req *pool.Message, to net.Addr, code codes.Code, resp *pool.Message) {
	c := content{code: code}
	if resp != nil {
		c = contentOf(resp)
		c.code = code
	}
	p.respond(e, req, to, c, nil)
}

// respond answers a central request: piggybacked in the ACK for a CON still
// unacknowledged, else as a NON with the request's token; Observe set when
// obs is not nil; Block1 echoed and Block2 applied (RFC 7959).
func (p *Proxy) respond(e *endpointState, req *pool.Message, to net.Addr, c content, obs *uint32) {
	m := centralMsg{typ: message.NonConfirmable, mid: message.GetMID(), token: req.Token(), c: c}
	if req.Type() == message.Confirmable {
		m.typ, m.mid = message.Acknowledgement, req.MessageID()
	}
	if obs != nil {
		m.observe, m.hasObs = *obs, true
	}
	if v, err := req.GetOptionUint32(message.Block1); err == nil {
		m.block1, m.hasBlock1 = v, true
	}
	v2, err := req.GetOptionUint32(message.Block2)
	if b := p.encodeBlocked(e, m, v2, err == nil, resourceKey(to, req)); b != nil {
		p.answerCentral(e, req, to, b)
	}
}

// hasBlock2Follow reports a Block2 request for a block after the first
// (a follow-up, never an observe registration; RFC 7959 section 2.6).
func hasBlock2Follow(m *pool.Message) bool {
	v, err := m.GetOptionUint32(message.Block2)
	return err == nil && v>>4 > 0
}

// flush delivers an endpoint's queued requests (the device is awake).
func (p *Proxy) flush(name string) {
	p.mu.Lock()
	e := p.eps[name]
	p.mu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	q := e.queue
	e.queue = nil
	e.mu.Unlock()
	if len(q) == 0 {
		return
	}
	// One goroutine relays the queue in order, one exchange at a time (the
	// queue is bounded by QueueLen; it takes no NStart slot so that a
	// device that wakes gets what waited for it, never a 5.03).
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for _, it := range q {
			it.msg.SetType(message.NonConfirmable) // the empty ACK was sent already
			p.relay(e, it.msg, it.from)
		}
	}()
}

// Tick answers queued requests older than QueueTTL with 5.04 Gateway
// Timeout. The daemon calls it every second; tests pass their own time.
func (p *Proxy) Tick(now time.Time) {
	p.mu.Lock()
	eps := make([]*endpointState, 0, len(p.eps))
	for _, e := range p.eps {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		e.mu.Lock()
		var keep, expired []queued
		for _, it := range e.queue {
			if now.After(it.deadline) {
				expired = append(expired, it)
			} else {
				keep = append(keep, it)
			}
		}
		e.queue = keep
		e.mu.Unlock()
		e.expireBlocks(now)
		for _, it := range expired {
			p.Stats.Expired.Add(1)
			it.msg.SetType(message.NonConfirmable)
			p.reply(e, it.msg, it.from, codes.GatewayTimeout, nil)
		}
	}
}

// isRequest reports a request code (class 0, not Empty; RFC 7252 section 12.1.1).
func isRequest(c codes.Code) bool { return c != codes.Empty && c>>5 == 0 }
