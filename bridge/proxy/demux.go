package proxy

// The demultiplexer: the one entry point of central → device CoAP. The
// stack owns the site prefix as a route (ipstack.AddPrefix) and hands
// every datagram for <any routed address>:5683 to demux, which finds the
// endpoint by destination address in one map lookup. An address with no
// CoAP endpoint is refused: ipstack counts it (Stats.Route.NoEndpoint) and
// answers ICMP port unreachable, rate-limited.
//
// The relay in the order a message walks it (each stage in its own file):
//
//   - central → device: demux.go (endpoint by destination address;
//     handleDown, the intake, sorts the datagram: answers for the spool
//     forwarder go to forward.go, ACK/RST of notifications to observe.go,
//     separate responses are acknowledged) → exchange.go (deduplication,
//     NStart and MaxInFlight) → block.go (Block1 reassembly, Block2
//     follow-ups from the cache) → observe.go (Observe:0 registrations) →
//     relay.go (over the device's DTLS session); while the device sleeps
//     the request waits in queue.go, the second intake. No stage writes or
//     calls an earlier one: each returns its verdict or answer to the
//     intake, which writes every answer through answer.go (the one return
//     path: Block2 cut, recorded for duplicates, sent).
//   - device → central: downlink/coap's session → proxy.go HandleDevice
//     (Proxy-Uri allow-list, spool mode in coapspool.go) → exchange.go
//     (NStart, MaxInFlight) → observe.go (Observe registrations) →
//     uptable.go (plain requests: one exchange table, answers fed back by
//     demuxUp) or upstream.go (go-coap clients for observe and Block1).

import (
	"net"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// demux is the ipstack.UDPHandler of the CoAP port. It runs on the
// stack's inbound goroutine; the read lock held across handleDown makes
// RemoveEndpoint wait for a datagram being handled, so none is handled
// for an endpoint once RemoveEndpoint returned.
func (p *Proxy) demux(src, dst netip.AddrPort, payload []byte) bool {
	p.dmu.RLock()
	defer p.dmu.RUnlock()
	e := p.byAddr[dst.Addr()]
	if e == nil {
		return false
	}
	p.Stats.Demuxed.Add(1)
	p.handleDown(e, payload, net.UDPAddrFromAddrPort(src))
	return true
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
	if resend, done := p.dedupCentral(e, msg, from); done {
		if resend != nil {
			e.write(resend, from)
		}
		return
	}
	if a, done := p.blockIn(e, msg, from); done {
		p.writeAnswer(e, msg, from, a)
		return
	}
	if a, done := p.blockCached(e, msg, from); done {
		p.writeAnswer(e, msg, from, a)
		return
	}
	if v, err := msg.Observe(); err == nil && v == 1 && !hasBlock2Follow(msg) {
		p.cancelDown(e, from, msg.Token())
	}
	if s := p.session(e.ep.Name); s != nil {
		if !p.acquire(e, dirDown) {
			p.writeAnswer(e, msg, from, p.overloadCentral(e, from))
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			a := p.toDevice(e, msg, from)
			p.release(e, dirDown)
			p.writeAnswer(e, msg, from, a)
		}()
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
		p.writeAnswer(e, msg, from, codeAnswer(codes.ServiceUnavailable))
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

// toDevice runs the device stages for an admitted central request: an
// Observe:0 registration goes to observe.go (which gives it back as a plain
// GET when the endpoint's observation bound is reached), anything else to
// relay.go. It returns the answer for the intake to write.
func (p *Proxy) toDevice(e *endpointState, msg *pool.Message, from net.Addr) answer {
	if isObserveRegistration(msg) {
		if a, done := p.observeDown(e, msg, from); done {
			return a
		}
		msg.Remove(message.Observe)
	}
	return p.relay(e, msg)
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
