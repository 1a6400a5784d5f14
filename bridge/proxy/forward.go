package proxy

// The forwarder: one per CoAP endpoint with a spool, sending the
// endpoint's spooled requests to central in order, one at a time (NSTART
// 1, RFC 7252 section 4.7), from the endpoint's own address and port
// <addr>:5683 — where the demultiplexer (demux.go) takes central's answers
// for it, so the source is the same across bridge restarts. Its goroutine
// runs only while the endpoint has spooled messages (ensure).
//
// At most once at central per (endpoint, message): each message is sent
// as CON with a Message ID chosen once and bound to it durably in the
// spool (Bind, fsynced) before the first transmission, and a token derived
// from its spool sequence number. Message IDs must not repeat for one
// endpoint within EXCHANGE_LIFETIME (247 s), also across a restart, or
// central would answer a new message from its cache and drop it: they
// follow a per-endpoint counter that never falls behind the wall clock at
// midsPerSecond (256/s: the 16-bit space wraps every 256 s), so a restarted
// bridge starts past every ID the killed one used (unless that one sent
// more than 256 messages per second for the endpoint). (go-coap's
// GetMID starts at a random value per process: a restart could reuse a
// recent ID — the 30-minute soak lost 22 messages that way.) Retransmissions — on timeout, after the
// uplink returns, after a bridge restart — reuse that Message ID from the
// same source address and port, so central's deduplication (RFC 7252
// section 4.5, EXCHANGE_LIFETIME) answers them from its cache instead of
// processing them again. A message leaves the spool when central answers:
// an ACK (piggybacked response or empty), a separate response, or RST;
// a 5.xx answer is retried later under a new Message ID.

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/internal/ctxsleep"
)

// Forwarder retransmission timing: ACK_TIMEOUT (RFC 7252 section 4.8),
// doubling up to forwardMaxBackoff and retrying for as long as the
// message is in the spool.
const (
	forwardAckTimeout = 2 * time.Second
	forwardMaxBackoff = 16 * time.Second
	// midsPerSecond: see the file comment (65536 / 256 = 256 s >
	// EXCHANGE_LIFETIME 247 s).
	midsPerSecond = 256
)

// fwdResult is central's answer to the message in flight.
type fwdResult struct {
	code codes.Code // codes.Empty for an empty ACK or RST
	rst  bool
}

type forwarder struct {
	p      *Proxy
	e      *endpointState
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // uplink up: send now
	now    func() time.Time
	mids   uint64 // next Message ID counter (run goroutine only)

	mu      sync.Mutex
	mid     int32         // guarded by mu: in flight, -1 none
	token   message.Token // guarded by mu
	res     chan fwdResult
	running bool // guarded by mu: a run goroutine is up
}

// startForwarder gives e its forwarder. Its goroutine runs only while the
// endpoint has spooled messages (ensure: started by spoolDevice, by the
// uplink coming up, or here for messages left from a previous run), so an
// endpoint with an empty spool costs no goroutine.
func (p *Proxy) startForwarder(e *endpointState) {
	if p.cfg.Spool == nil || !p.cfg.Central.IsValid() {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	f := &forwarder{p: p, e: e, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), mid: -1, now: time.Now}
	e.fwd = f
	if len(p.cfg.Spool.Pending(e.ep.Name, 0, 1)) > 0 {
		f.ensure()
	}
}

func (f *forwarder) stop() { f.cancel() }

// ensure starts the run goroutine unless it is up or the forwarder stopped.
func (f *forwarder) ensure() {
	f.mu.Lock()
	if f.running || f.ctx.Err() != nil {
		f.mu.Unlock()
		return
	}
	f.running = true
	f.p.wg.Add(1)
	f.mu.Unlock()
	go func() { defer f.p.wg.Done(); f.run() }()
}

func (f *forwarder) kick() {
	f.ensure()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run delivers the spooled messages in order and returns when there are
// none left (or the forwarder stops).
func (f *forwarder) run() {
	sp, name := f.p.cfg.Spool, f.e.ep.Name
	for {
		msgs := sp.Pending(name, 0, 1)
		if len(msgs) == 0 {
			f.mu.Lock()
			f.running = false
			f.mu.Unlock()
			// A message appended between Pending and running=false found
			// the goroutine still marked up: look once more.
			if len(sp.Pending(name, 0, 1)) == 0 {
				return
			}
			f.mu.Lock()
			if f.running || f.ctx.Err() != nil {
				f.mu.Unlock()
				return
			}
			f.running = true
			f.mu.Unlock()
			continue
		}
		if !f.deliver(msgs[0]) {
			f.mu.Lock()
			f.running = false
			f.mu.Unlock()
			return
		}
	}
}

// offer hands a datagram from central to the forwarder; it reports
// whether it was the answer to the message in flight.
func (f *forwarder) offer(m *pool.Message) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mid < 0 {
		return false
	}
	var r fwdResult
	switch t := m.Type(); {
	case (t == message.Acknowledgement || t == message.Reset) && m.MessageID() == f.mid &&
		(m.Code() == codes.Empty || string(m.Token()) == string(f.token)):
		r = fwdResult{code: m.Code(), rst: t == message.Reset}
	case m.Code() != codes.Empty && !isRequest(m.Code()) && string(m.Token()) == string(f.token):
		r = fwdResult{code: m.Code()} // separate response
	default:
		return false
	}
	select {
	case f.res <- r:
	default:
	}
	return true
}

// bindMID returns m's Message ID, choosing and durably binding one if it
// has none.
func (f *forwarder) bindMID(m *spool.Message) uint16 {
	if m.PacketID != 0 {
		return m.PacketID
	}
	mid := f.newMID()
	if err := f.p.cfg.Spool.Bind(m.Endpoint, m.Seq, mid, 1, true); err != nil {
		f.p.warnf("coap spool bind failed", "endpoint", m.Endpoint, "err", err.Error())
	}
	m.PacketID = mid
	return mid
}

// newMID returns the next Message ID (never 0): the counter, pushed up to
// the wall clock × midsPerSecond (see the file comment).
func (f *forwarder) newMID() uint16 {
	if floor := uint64(f.now().Unix()) * midsPerSecond; f.mids < floor {
		f.mids = floor
	}
	for {
		mid := uint16(f.mids)
		f.mids++
		if mid != 0 {
			return mid
		}
	}
}

// datagram builds the CON for m under mid and its token.
func (f *forwarder) datagram(m spool.Message, mid uint16, tok message.Token) ([]byte, error) {
	msg := pool.NewMessage(f.ctx)
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, m.Payload); err != nil {
		return nil, err
	}
	msg.SetType(message.Confirmable)
	msg.SetMessageID(int32(mid))
	msg.SetToken(tok)
	return msg.MarshalWithEncoder(coder.DefaultCoder)
}

// deliver sends m until central answers; false when the forwarder stops.
func (f *forwarder) deliver(m spool.Message) bool {
	p, name := f.p, f.e.ep.Name
	tok := make(message.Token, 8)
	binary.BigEndian.PutUint64(tok, m.Seq)
	to := net.UDPAddrFromAddrPort(p.cfg.Central)
	backoff := forwardAckTimeout
	sent := false
	for {
		mid := f.bindMID(&m)
		b, err := f.datagram(m, mid, tok)
		if err != nil { // unreadable record: cannot ever be sent
			p.Stats.ForwardDropped.Add(1)
			p.warnf("coap spool record undecodable, dropped", "endpoint", name, "err", err.Error())
			_ = p.cfg.Spool.Ack(name, m.Seq)
			return true
		}
		res := make(chan fwdResult, 1)
		f.mu.Lock()
		f.mid, f.token, f.res = int32(mid), tok, res
		f.mu.Unlock()
		var r fwdResult
		got := false
		for !got {
			if p.uplinkUp() {
				f.e.write(b, to)
				if sent {
					p.Stats.ForwardRetransmits.Add(1)
				}
				sent = true
			}
			jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
			t := time.NewTimer(backoff + jitter)
			select {
			case r = <-res:
				got = true
			case <-t.C:
				backoff = min(2*backoff, forwardMaxBackoff)
			case <-f.wake:
				backoff = forwardAckTimeout
			case <-f.ctx.Done():
				t.Stop()
				f.clear()
				return false
			}
			t.Stop()
		}
		f.clear()
		if r.code >= codes.InternalServerError && !r.rst {
			// Central could not take it now: a new exchange later.
			p.Stats.ForwardCentralErrors.Add(1)
			m.PacketID = 0 // central cached this answer under the old Message ID
			if !ctxsleep.Sleep(f.ctx, backoff) {
				return false
			}
			continue
		}
		switch {
		case r.rst:
			p.Stats.ForwardRejected.Add(1)
			p.warnf("central reset a spooled request", "endpoint", name)
		case r.code >= codes.BadRequest:
			p.Stats.ForwardRejected.Add(1)
			p.warnf("central refused a spooled request", "endpoint", name, "code", r.code.String())
		default:
			p.Stats.Forwarded.Add(1)
		}
		if err := p.cfg.Spool.Ack(name, m.Seq); err != nil {
			p.warnf("coap spool ack failed", "endpoint", name, "err", err.Error())
		}
		return true
	}
}

func (f *forwarder) clear() {
	f.mu.Lock()
	f.mid, f.token, f.res = -1, nil, nil
	f.mu.Unlock()
}
