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
//     handleDown sorts the datagram: answers for the spool forwarder go to
//     forward.go, ACK/RST of notifications to observe.go, separate
//     responses are acknowledged) → exchange.go (deduplication, NStart and
//     MaxInFlight) → block.go (Block1 reassembly, Block2 follow-ups) →
//     observe.go (Observe:0 registrations) → relay.go (over the device's
//     DTLS session, or queued while it sleeps; respond writes the answer
//     and records it for duplicates).
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
