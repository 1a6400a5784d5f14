package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/downlink/device"
	"github.com/fleetgate/fleetgate/ipstack"
)

// endpointState is one endpoint's address-side state: its entry in the
// demultiplexer (central → device datagrams to <addr>:5683, demux.go),
// upstream clients by destination, and the queue of central → device
// requests waiting for the device to wake.
type endpointState struct {
	ep   device.Endpoint
	st   *ipstack.Stack
	gone atomic.Bool // removed: nothing more is sent from its address
	up   *upstreams  // its own lock
	fwd  *forwarder  // nil without a CoAP spool; set before it is demultiplexed to
	ex   exchanges   // its own lock: dedup and in-flight slots (exchange.go)
	// upSeq numbers its requests through the upstream table (uptable.go).
	upSeq atomic.Uint32

	mu      sync.Mutex
	queue   []queued              // guarded by mu
	down    map[string]*downObs   // guarded by mu: central observers by peer|token
	downMID map[int32]*downObs    // guarded by mu: unacknowledged CON notifications
	upObs   map[string]*upObs     // guarded by mu: device observations by token
	upMID   map[int32]*upObs      // guarded by mu: last NON notification to the device
	uploads map[string]*upload    // guarded by mu: Block1 reassembly
	bodies  map[string]cachedBody // guarded by mu: Block2 bodies for follow-ups
}

func newEndpointState(ep device.Endpoint, st *ipstack.Stack, up *upstreams) *endpointState {
	e := &endpointState{ep: ep, st: st, up: up,
		down: map[string]*downObs{}, downMID: map[int32]*downObs{}, upObs: map[string]*upObs{},
		upMID: map[int32]*upObs{}, uploads: map[string]*upload{}, bodies: map[string]cachedBody{}}
	e.upSeq.Store(rand.Uint32N(1 << 16))
	return e
}

// endpoint returns an endpoint's state, or nil.
func (p *Proxy) endpoint(name string) *endpointState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eps[name]
}

// queued is a central → device request waiting for the device.
type queued struct {
	msg      *pool.Message
	from     net.Addr
	deadline time.Time
}

func (e *endpointState) close() {
	if e.fwd != nil {
		e.fwd.stop()
	}
	e.gone.Store(true)
	e.up.close()
}

// AddEndpoint serves an endpoint: its address is part of the routed
// prefix the stack owns (no stack address, no socket, no goroutine); a CoAP
// endpoint gets an entry in the demultiplexer for central → device CoAP.
func (p *Proxy) AddEndpoint(ep device.Endpoint) error {
	if !p.cfg.Stack.Routed(ep.Addr) {
		return fmt.Errorf("proxy: endpoint %s address %s is outside the routed prefix %s", ep.Name, ep.Addr, p.cfg.Registry.Prefix())
	}
	if ep.Protocol != device.CoAP {
		return nil
	}
	e := newEndpointState(ep, p.cfg.Stack, p.newUpstreams(ep))
	p.startForwarder(e)
	p.mu.Lock()
	old := p.eps[ep.Name]
	p.eps[ep.Name] = e
	p.mu.Unlock()
	p.dmu.Lock()
	if old != nil && p.byAddr[old.ep.Addr] == old {
		delete(p.byAddr, old.ep.Addr)
	}
	p.byAddr[ep.Addr] = e
	p.dmu.Unlock()
	if old != nil {
		p.endObservations(old, true)
		old.close()
	}
	return nil
}

// newUpstreams returns ep's upstream clients: dialled in ipstack from the
// endpoint's address, replaced when they fail (upstream.go).
func (p *Proxy) newUpstreams(ep device.Endpoint) *upstreams {
	dial := func(dst netip.AddrPort) (net.Conn, error) {
		return p.cfg.Stack.DialUDP(netip.AddrPortFrom(ep.Addr, 0), dst)
	}
	newConn := func(nc net.Conn) *udpclient.Conn {
		return newCoAPClient(p.ctx, nc, func(err error) { p.warnf("upstream coap", "endpoint", ep.Name, "err", err.Error()) })
	}
	return newUpstreams(dial, newConn, &p.Stats.UpstreamReplaced)
}

// upstream returns the live client for ep → dst (upstream.go).
func (p *Proxy) upstream(ep device.Endpoint, dst netip.AddrPort) (*upstreams, *udpclient.Conn, error) {
	p.mu.Lock()
	e := p.eps[ep.Name]
	p.mu.Unlock()
	if e == nil {
		return nil, nil, errors.New("proxy: endpoint not added")
	}
	c, err := e.up.get(dst)
	return e.up, c, err
}

// handleDown handles one datagram from central to an endpoint address.
func (p *Proxy) handleDown(e *endpointState, b []byte, from net.Addr) {
	msg := pool.NewMessage(p.ctx)
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, b); err != nil {
		p.Stats.Malformed.Add(1)
		p.warnf("malformed coap to endpoint address", "endpoint", e.ep.Name, "peer", from.String())
		return
	}
	if e.fwd != nil && e.fwd.offer(msg) {
		p.ackResponse(e, msg, from)
		return
	}
	if msg.Code() == codes.Empty {
		// ACK or RST of a notification we sent (RFC 7641 section 3.6).
		if t := msg.Type(); t == message.Acknowledgement || t == message.Reset {
			p.downAck(e, msg.MessageID(), t == message.Reset)
		}
		return
	}
	if !isRequest(msg.Code()) {
		p.ackResponse(e, msg, from)
		return
	}
	if p.dedupCentral(e, msg, from) {
		return
	}
	if p.blockIn(e, msg, from) || p.blockCached(e, msg, from) {
		return
	}
	if v, err := msg.Observe(); err == nil && v == 1 && !hasBlock2Follow(msg) {
		p.cancelDown(e, from, msg.Token())
	}
	if s := p.session(e.ep.Name); s != nil {
		if !p.acquire(e, dirDown) {
			p.overloadCentral(e, msg, from)
			return
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); defer p.release(e, dirDown); p.relay(e, msg, from) }()
		return
	}
	// Read what the empty ACK needs before the message is shared with
	// flush/Tick through the queue.
	con, mid := msg.Type() == message.Confirmable, msg.MessageID()
	key, hasKey := keyOf(from, msg)
	e.mu.Lock()
	full := len(e.queue) >= p.cfg.QueueLen
	if !full {
		e.queue = append(e.queue, queued{msg: msg, from: from, deadline: time.Now().Add(p.cfg.QueueTTL)})
	}
	e.mu.Unlock()
	if full {
		p.Stats.QueueFull.Add(1)
		p.reply(e, msg, from, codes.ServiceUnavailable, nil)
		return
	}
	p.Stats.Queued.Add(1)
	if con { // empty ACK: separate response follows (RFC 7252 section 5.2.2)
		ack := pool.NewMessage(p.ctx)
		ack.SetType(message.Acknowledgement)
		ack.SetMessageID(mid)
		if b, err := ack.MarshalWithEncoder(coder.DefaultCoder); err == nil {
			if hasKey { // a duplicate CON gets the same empty ACK
				e.ex.answered(key, b)
			}
			e.write(b, from)
		}
	}
}

// ackResponse acknowledges a CON response from central (a separate
// response to a forwarded request, RFC 7252 section 5.2.2), so that it
// is not retransmitted.
func (p *Proxy) ackResponse(e *endpointState, msg *pool.Message, from net.Addr) {
	if msg.Type() != message.Confirmable || msg.Code() == codes.Empty {
		return
	}
	ack := pool.NewMessage(p.ctx)
	ack.SetType(message.Acknowledgement)
	ack.SetMessageID(msg.MessageID())
	if b, err := ack.MarshalWithEncoder(coder.DefaultCoder); err == nil {
		e.write(b, from)
	}
}

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
