package proxy

// The upstream exchange table: device → central requests without a go-coap
// client per (endpoint, destination). A plain request (not an observe
// registration, body within one block) leaves from <endpoint>:UpstreamPort
// as a CON under a fresh 8-byte token of the proxy's own (see upstream.go
// for why the device's token never goes upstream) and an endpoint message
// ID; ONE table keyed by (endpoint address, token), and by (endpoint
// address, message ID) for empty ACKs and RSTs, matches the answers the
// stack hands to demuxUp (the UDP handler of UpstreamPort on the whole
// routed prefix). No socket, goroutine or timer per exchange: one
// goroutine per proxy retransmits what is due (RFC 7252 section 4.2:
// ACK_TIMEOUT 2 s × [1, 1.5), doubling, MAX_RETRANSMIT 4) by the proxy's
// clock. A separate response (empty ACK first, CON response later) is
// acknowledged and matched by token; a Block2 response (RFC 7959) is
// completed with follow-up requests under the same token.
//
// Observe registrations and Block1 uploads still use go-coap's client
// (upstream.go), which keeps the observation's state.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// UpstreamPort is the source port of device → central requests relayed
// through the exchange table (below ipstack's ephemeral range, so no
// dialled conn takes it).
const UpstreamPort = 48683

// RFC 7252 section 4.8 transmission parameters.
const (
	ackTimeout      = 2 * time.Second
	retransmitTick  = 100 * time.Millisecond
	maxUpBlockCount = 1024 // bounds the follow-ups of one Block2 response
)

var (
	errUpTimeout = errors.New("proxy: upstream did not acknowledge (MAX_RETRANSMIT reached)")
	errUpReset   = errors.New("proxy: upstream answered RST")
	errUpGone    = errors.New("proxy: endpoint removed")
	errUpBlock   = errors.New("proxy: bad Block2 response from upstream")
	errUpDead    = errors.New("proxy: upstream did not answer within RequestTimeout")
)

type upKey struct {
	ep  netip.Addr
	tok uint64
}

type upMIDKey struct {
	ep  netip.Addr
	mid uint16
}

// upEx is one request in flight upstream.
type upEx struct {
	e     *endpointState
	key   upKey
	mid   uint16
	src   netip.AddrPort // <endpoint>:UpstreamPort
	dst   netip.AddrPort
	b     []byte // the datagram, for retransmissions (aliases buf)
	buf   []byte // reused datagram buffer (upExPool)
	body  []byte // reused buffer for the device request's payload
	acked bool   // an empty ACK came: a separate response follows
	tries int
	wait  time.Duration
	next  time.Time
	// deadline (wall clock) ends the exchange with errUpDeadline when no
	// answer came: RequestTimeout, or the caller's context deadline. One
	// field checked by runRetransmit instead of a context timer per request.
	deadline time.Time
	done     chan upResult // buffered 1
}

type upResult struct {
	c     content
	block uint32 // the response's Block2 option when hasBlock
	hasBl bool
	err   error
}

// upTable is the proxy's table of upstream exchanges.
type upTable struct {
	mu    sync.Mutex
	byTok map[upKey]*upEx    // guarded by mu
	byMID map[upMIDKey]*upEx // guarded by mu
}

func newUpTable() *upTable {
	return &upTable{byTok: map[upKey]*upEx{}, byMID: map[upMIDKey]*upEx{}}
}

var upMsgPool = sync.Pool{New: func() any { return pool.NewMessage(context.Background()) }}

// upPlain reports whether a device request goes through the table: not an
// observe registration or cancellation, and its body within one block.
func upPlain(r *pool.Message) bool {
	if r.HasOption(message.Observe) || r.HasOption(message.Block1) || r.HasOption(message.Block2) {
		return false
	}
	if r.Body() == nil {
		return true
	}
	n, err := r.BodySize()
	return err == nil && n <= 1024
}

// upExchange relays the device request r to dst (path and query as the
// next hop needs them) and returns the answer, the Block2 follow-ups
// collected (at most MaxBody bytes).
func (p *Proxy) upExchange(ctx context.Context, e *endpointState, dst netip.AddrPort, r *pool.Message, path string, query []string) (content, error) {
	tok := rand.Uint64()
	var body []byte
	var first content
	for num := int64(0); ; num++ {
		res, err := p.upRoundTrip(ctx, e, dst, tok, r, path, query, num)
		if err != nil {
			return content{}, err
		}
		if !res.hasBl {
			if num == 0 {
				return res.c, nil
			}
			return content{}, errUpBlock
		}
		_, n, more, err := blockwise.DecodeBlockOption(res.block)
		if err != nil || n != num || num >= maxUpBlockCount {
			return content{}, errUpBlock
		}
		if num == 0 {
			first = res.c
		}
		body = append(body, res.c.body...)
		if len(body) > p.cfg.MaxBody {
			return content{}, errUpBlock
		}
		if !more {
			first.body = body
			return first, nil
		}
	}
}

// upRoundTrip sends one request (block num of the answer) and waits for
// its answer.
func (p *Proxy) upRoundTrip(ctx context.Context, e *endpointState, dst netip.AddrPort, tok uint64, r *pool.Message, path string, query []string, num int64) (upResult, error) {
	x := upExPool.Get().(*upEx)
	mid := e.nextUpMID()
	b, err := encodeUp(x, r, path, query, tok, mid, num)
	if err != nil {
		upExPool.Put(x)
		return upResult{}, err
	}
	now := p.now()
	wait := ackTimeout + time.Duration(rand.Int64N(int64(ackTimeout/2)))
	src := srcFor(e.ep, dst.Addr())
	x.e, x.key, x.mid, x.src, x.dst = e, upKey{src, tok}, mid, netip.AddrPortFrom(src, UpstreamPort), dst
	x.b, x.acked, x.tries, x.wait, x.next = b, false, 0, wait, now.Add(wait)
	x.deadline = time.Now().Add(p.cfg.RequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(x.deadline) {
		x.deadline = d
	}
	t := p.up
	t.mu.Lock()
	if old := t.byTok[x.key]; old != nil { // a stale exchange under the same token (cannot happen: one round trip at a time)
		delete(t.byMID, upMIDKey{old.key.ep, old.mid})
	}
	t.byTok[x.key] = x
	t.byMID[upMIDKey{src, mid}] = x
	t.mu.Unlock()
	if e.gone.Load() {
		t.remove(x)
		return upResult{}, errUpGone
	}
	_ = p.cfg.Stack.WriteUDP(x.src, dst, b)
	select {
	case res := <-x.done:
		// Whoever took x out of the table sent res and holds x no more
		// (retransmitUp copies the datagram under the table's lock): x is
		// ours again, reused for the next exchange.
		x.e, x.src, x.dst = nil, netip.AddrPort{}, netip.AddrPort{}
		upExPool.Put(x)
		return res, res.err
	case <-ctx.Done():
		t.remove(x) // not pooled: demuxUp may still finish it
		return upResult{}, ctx.Err()
	}
}

// upExPool recycles exchanges with their result channel, datagram and
// body buffers (each request used to allocate all four).
var upExPool = sync.Pool{New: func() any { return &upEx{done: make(chan upResult, 1)} }}

// encodeUp encodes the upstream request for r into x's buffer and
// returns it. The device's own options go as they are (hop-by-hop ones
// dropped, RFC 7252 section 5.7.2) when its path and query are the next
// hop's; a Proxy-Uri request is rebuilt through a go-coap message.
func encodeUp(x *upEx, r *pool.Message, path string, query []string, tok uint64, mid uint16, num int64) ([]byte, error) {
	var tb [8]byte
	binary.BigEndian.PutUint64(tb[:], tok)
	if len(query) > 0 || r.HasOption(message.ProxyURI) {
		req := upMsgPool.Get().(*pool.Message)
		req.Reset()
		copyRequest(req, r, path, query)
		req.SetToken(tb[:])
		req.SetType(message.Confirmable)
		req.SetMessageID(int32(mid))
		if num > 0 {
			v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, false)
			req.SetOptionUint32(message.Block2, v)
			req.SetBody(nil) // RFC 7959 section 2.4: follow-ups carry no payload of their own
		}
		b, err := req.MarshalWithEncoder(coder.DefaultCoder)
		x.buf = append(x.buf[:0], b...) // b aliases req's marshal buffer, which the pool reuses
		req.Reset()
		upMsgPool.Put(req)
		return x.buf, err
	}
	var ob [16]message.Option
	opts := message.Options(ob[:0])
	for _, o := range r.Options() {
		if !skipOpts[o.ID] {
			opts = append(opts, o)
		}
	}
	var payload []byte
	if num > 0 {
		var vb [4]byte
		v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, false)
		var err error
		if opts, _, err = opts.SetUint32(vb[:], message.Block2, v); err != nil {
			return nil, err
		}
	} else if body := r.Body(); body != nil {
		n, err := r.BodySize()
		if err != nil {
			return nil, err
		}
		x.body = slices.Grow(x.body[:0], int(n))[:n]
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(body, x.body); err != nil {
			return nil, err
		}
		_, _ = body.Seek(0, io.SeekStart)
		payload = x.body
	}
	m := message.Message{Token: tb[:], Code: r.Code(), Options: opts, Payload: payload, MessageID: int32(mid), Type: message.Confirmable}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, err
	}
	x.buf = slices.Grow(x.buf[:0], size)[:size]
	n, err := coder.DefaultCoder.Encode(m, x.buf)
	return x.buf[:n], err
}

func (t *upTable) remove(x *upEx) {
	t.mu.Lock()
	if t.byTok[x.key] == x {
		delete(t.byTok, x.key)
	}
	if k := (upMIDKey{x.key.ep, x.mid}); t.byMID[k] == x {
		delete(t.byMID, k)
	}
	t.mu.Unlock()
}

// finish ends x with res (the caller removed it from the table).
func (x *upEx) finish(res upResult) {
	select {
	case x.done <- res:
	default:
	}
}

// nextUpMID returns the endpoint's next upstream message ID (random
// start, then sequential: an endpoint would need 265 requests/s for 247 s
// to come back to one within EXCHANGE_LIFETIME).
func (e *endpointState) nextUpMID() uint16 {
	return uint16(e.upSeq.Add(1))
}

// demuxUp is the ipstack.UDPHandler of UpstreamPort: answers from
// upstream to <endpoint>:UpstreamPort, matched in the table. It runs on
// the stack's inbound goroutine and never blocks.
func (p *Proxy) demuxUp(src, dst netip.AddrPort, payload []byte) bool {
	p.dmu.RLock()
	e := p.byAddr[dst.Addr()]
	p.dmu.RUnlock()
	if e == nil {
		return false // ipstack counts it and answers port unreachable
	}
	mp := upDecPool.Get().(*message.Message)
	defer upDecPool.Put(mp)
	*mp = message.Message{Options: mp.Options[:0]}
	m := mp // its option array would escape to the heap per datagram if it lived on the stack
	if _, err := coder.DefaultCoder.Decode(payload, m); err != nil {
		p.Stats.Malformed.Add(1)
		p.warnf("malformed coap from upstream", "endpoint", e.ep.Name, "peer", src.String())
		return true
	}
	t := p.up
	switch {
	case m.Code == codes.Empty && (m.Type == message.Acknowledgement || m.Type == message.Reset):
		k := upMIDKey{dst.Addr(), uint16(m.MessageID)}
		t.mu.Lock()
		x := t.byMID[k]
		if x == nil || x.dst != src {
			t.mu.Unlock()
			return true
		}
		if m.Type == message.Acknowledgement {
			x.acked = true // separate response follows
			t.mu.Unlock()
			return true
		}
		delete(t.byMID, k)
		delete(t.byTok, x.key)
		t.mu.Unlock()
		x.finish(upResult{err: errUpReset})
		return true
	case isRequest(m.Code) || m.Code == codes.Empty:
		p.Stats.Malformed.Add(1) // nothing is served on UpstreamPort
		return true
	}
	if m.Type == message.Confirmable { // separate response: acknowledge it, even a duplicate
		var ab [16]byte
		if n, err := coder.DefaultCoder.Encode(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: m.MessageID}, ab[:]); err == nil && !e.gone.Load() {
			_ = p.cfg.Stack.WriteUDP(dst, src, ab[:n])
		}
	}
	if len(m.Token) != 8 {
		p.Stats.UpstreamUnmatched.Add(1)
		return true
	}
	k := upKey{dst.Addr(), binary.BigEndian.Uint64(m.Token)}
	t.mu.Lock()
	x := t.byTok[k]
	if x == nil || x.dst != src || (m.Type == message.Acknowledgement && uint16(m.MessageID) != x.mid) {
		t.mu.Unlock()
		p.Stats.UpstreamUnmatched.Add(1)
		return true // late or foreign: dropped
	}
	delete(t.byTok, k)
	if mk := (upMIDKey{k.ep, x.mid}); t.byMID[mk] == x {
		delete(t.byMID, mk)
	}
	t.mu.Unlock()
	res := upResult{c: contentOfMessage(m)}
	if v, err := m.Options.GetUint32(message.Block2); err == nil {
		res.block, res.hasBl = v, true
	}
	x.finish(res)
	return true
}

// upDecPool holds decoded upstream answers' option arrays (demuxUp).
var upDecPool = sync.Pool{New: func() any { return &message.Message{Options: make(message.Options, 0, 16)} }}

// contentOfMessage is contentOf for a decoded message.Message whose
// option values and payload alias a buffer the caller reuses.
func contentOfMessage(m *message.Message) content {
	c := content{code: m.Code}
	if cf, err := m.Options.ContentFormat(); err == nil {
		c.cf, c.hasCF = cf, true
	}
	for _, o := range m.Options {
		if skipOpts[o.ID] || o.ID == message.ContentFormat {
			continue
		}
		c.opts = append(c.opts, message.Option{ID: o.ID, Value: bytes.Clone(o.Value)})
	}
	if len(m.Payload) > 0 {
		c.body = bytes.Clone(m.Payload)
	}
	return c
}

// runRetransmit retransmits due upstream CONs every retransmitTick until
// the proxy closes.
func (p *Proxy) runRetransmit() {
	defer p.wg.Done()
	tk := time.NewTicker(retransmitTick)
	defer tk.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tk.C:
			p.retransmitUp(p.now())
		}
	}
}

// retransmitUp resends every unacknowledged CON whose time came and ends
// those that reached MAX_RETRANSMIT (RFC 7252 section 4.2).
func (p *Proxy) retransmitUp(now time.Time) {
	type send struct {
		src, dst netip.AddrPort
		b        []byte
	}
	var out []send
	var dead []*upEx
	var late []*upEx
	wall := time.Now() // deadlines are wall-clock (now may be a test's clock)
	t := p.up
	t.mu.Lock()
	for k, x := range t.byTok {
		if wall.After(x.deadline) {
			delete(t.byTok, k)
			if mk := (upMIDKey{k.ep, x.mid}); t.byMID[mk] == x {
				delete(t.byMID, mk)
			}
			late = append(late, x)
			continue
		}
		if x.acked || now.Before(x.next) {
			continue
		}
		if x.tries >= maxRetransmit || x.e.gone.Load() {
			delete(t.byTok, k)
			if mk := (upMIDKey{k.ep, x.mid}); t.byMID[mk] == x {
				delete(t.byMID, mk)
			}
			dead = append(dead, x)
			continue
		}
		x.tries++
		x.wait *= 2
		x.next = now.Add(x.wait)
		out = append(out, send{x.src, x.dst, bytes.Clone(x.b)}) // x.b is reused once x finishes
	}
	t.mu.Unlock()
	for _, s := range out {
		p.Stats.UpstreamRetransmits.Add(1)
		_ = p.cfg.Stack.WriteUDP(s.src, s.dst, s.b)
	}
	for _, x := range dead {
		x.finish(upResult{err: errUpTimeout})
	}
	for _, x := range late {
		x.finish(upResult{err: errUpDead})
	}
}

// inFlightUp returns the exchanges in the table.
func (t *upTable) inFlightUp() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byTok)
}
