package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// scriptedCentral is a raw CoAP peer at 10.20.0.1:5683 in central's stack:
// answer decides, per received datagram, what goes back (nil: nothing).
type scriptedCentral struct {
	pc   net.PacketConn
	mu   sync.Mutex
	got  []*pool.Message // guarded by mu: every datagram received
	from net.Addr        // guarded by mu: the last sender
}

func (r *rig) scriptedCentral(t *testing.T, answer func(m *pool.Message, n int) [][]byte) *scriptedCentral {
	t.Helper()
	pc, err := r.pair.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	c := &scriptedCentral{pc: pc}
	coaptest.Serve(t, pc, func(m *pool.Message, from net.Addr) [][]byte {
		c.mu.Lock()
		c.got = append(c.got, m)
		c.from = from
		k := len(c.got)
		c.mu.Unlock()
		return answer(m, k)
	})
	return c
}

func (c *scriptedCentral) received() []*pool.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*pool.Message(nil), c.got...)
}

func encodeMsg(t *testing.T, typ message.Type, code codes.Code, mid int32, tok message.Token) []byte {
	m := pool.NewMessage(context.Background())
	m.SetType(typ)
	m.SetCode(code)
	m.SetMessageID(mid)
	m.SetToken(tok)
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeClock is the proxy's clock in these tests: it moves only when the
// test advances it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// A device request through the upstream table: central ignores the first
// two copies; the proxy retransmits them by its clock with the same
// message ID and token (RFC 7252 section 4.2) and relays the answer to the
// third. No go-coap client is dialled for it.
func TestUpTableRetransmits(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	r := newRig(t, func(c *Config) { c.Now = clk.now; c.RequestTimeout = 20 * time.Second })
	cen := r.scriptedCentral(t, func(m *pool.Message, n int) [][]byte {
		if n < 3 {
			return nil
		}
		return [][]byte{encodeMsg(t, message.Acknowledgement, codes.Content, m.MessageID(), m.Token())}
	})
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan codes.Code, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := d.Conn.Get(ctx, "/x")
		if err != nil {
			got <- codes.Empty
			return
		}
		got <- resp.Code()
	}()
	waitFor(t, func() bool { return len(cen.received()) == 1 })
	r.px.retransmitUp(clk.now()) // not due yet
	clk.advance(3 * time.Second) // ≥ ACK_TIMEOUT × 1.5
	r.px.retransmitUp(clk.now())
	waitFor(t, func() bool { return len(cen.received()) == 2 })
	clk.advance(6 * time.Second) // doubled
	r.px.retransmitUp(clk.now())
	if c := <-got; c != codes.Content {
		t.Fatalf("device got %v, want 2.05", c)
	}
	ms := cen.received()
	if len(ms) != 3 {
		t.Fatalf("central received %d copies, want 3", len(ms))
	}
	for _, m := range ms[1:] {
		if m.MessageID() != ms[0].MessageID() || string(m.Token()) != string(ms[0].Token()) || len(m.Token()) != 8 {
			t.Fatalf("retransmission changed MID/token: %d %x vs %d %x", m.MessageID(), m.Token(), ms[0].MessageID(), ms[0].Token())
		}
	}
	if n := r.px.Stats.UpstreamRetransmits.Load(); n != 2 {
		t.Fatalf("UpstreamRetransmits = %d, want 2", n)
	}
	if n := r.px.up.inFlightUp(); n != 0 {
		t.Fatalf("%d exchanges left in the table", n)
	}
	e := r.px.endpoint("sensor-17")
	e.up.mu.Lock()
	n := len(e.up.conns)
	e.up.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d go-coap upstream clients dialled, want 0", n)
	}
}

// Central answers with an empty ACK, then a separate CON response: the
// proxy stops retransmitting, acknowledges the response and relays it.
// Central that never answers: after MAX_RETRANSMIT the device gets 5.03;
// an RST ends the exchange at once with 5.03 too.
func TestUpTableSeparateTimeoutReset(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	r := newRig(t, func(c *Config) { c.Now = clk.now; c.RequestTimeout = 30 * time.Second })
	var mode atomic.Int32 // 0 separate, 1 silent, 2 reset
	cen := r.scriptedCentral(t, func(m *pool.Message, _ int) [][]byte {
		if !isRequest(m.Code()) {
			return nil // the proxy's ACK of the separate response
		}
		switch mode.Load() {
		case 0:
			return [][]byte{encodeMsg(t, message.Acknowledgement, codes.Empty, m.MessageID(), nil),
				encodeMsg(t, message.Confirmable, codes.Changed, 0x7777, m.Token())}
		case 2:
			return [][]byte{encodeMsg(t, message.Reset, codes.Empty, m.MessageID(), nil)}
		}
		return nil
	})
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	get := func() codes.Code {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := d.Conn.Get(ctx, "/x")
		if err != nil {
			t.Fatalf("device GET: %v", err)
		}
		return resp.Code()
	}
	if c := get(); c != codes.Changed {
		t.Fatalf("separate response: device got %v, want 2.04", c)
	}
	waitFor(t, func() bool {
		for _, m := range cen.received() {
			if m.Type() == message.Acknowledgement && m.MessageID() == 0x7777 {
				return true
			}
		}
		return false
	})

	mode.Store(1)
	res := make(chan codes.Code, 1)
	before := len(cen.received())
	go func() { res <- get() }()
	waitFor(t, func() bool { return len(cen.received()) == before+1 })
	for i := range maxRetransmit + 1 {
		clk.advance(time.Minute)
		r.px.retransmitUp(clk.now())
		if i < maxRetransmit {
			waitFor(t, func() bool { return len(cen.received()) == before+2+i })
		}
	}
	if c := <-res; c != codes.ServiceUnavailable {
		t.Fatalf("silent central: device got %v, want 5.03", c)
	}
	if got := len(cen.received()) - before; got != 1+maxRetransmit {
		t.Fatalf("central received %d copies, want %d", got, 1+maxRetransmit)
	}

	mode.Store(2)
	if c := get(); c != codes.ServiceUnavailable {
		t.Fatalf("RST: device got %v, want 5.03", c)
	}
	if e := r.px.Stats.UpstreamErrors.Load(); e != 2 {
		t.Fatalf("UpstreamErrors = %d, want 2", e)
	}
	if n := r.px.up.inFlightUp(); n != 0 {
		t.Fatalf("%d exchanges left in the table", n)
	}
}

// Many exchanges at once through the table, each with its own body, and
// central drops every first copy: each retransmission must carry its own
// request's bytes (the encoded datagram is the exchange's own, not a
// pooled buffer the next request reuses), every answer its own body, and
// the table ends empty.
func TestUpTableConcurrentExchanges(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	r := newRig(t, func(c *Config) { c.Now = clk.now; c.RequestTimeout = 30 * time.Second })
	var mu sync.Mutex
	first := map[string]string{} // token → body of the first copy
	var mismatched atomic.Int32
	cen := r.scriptedCentral(t, func(m *pool.Message, _ int) [][]byte {
		body, _ := m.ReadBody()
		mu.Lock()
		b0, seen := first[string(m.Token())]
		if !seen {
			first[string(m.Token())] = string(body)
		}
		mu.Unlock()
		if !seen {
			return nil // the first copy is lost
		}
		if b0 != string(body) {
			mismatched.Add(1)
		}
		a := pool.NewMessage(context.Background())
		a.SetType(message.Acknowledgement)
		a.SetCode(codes.Content)
		a.SetMessageID(m.MessageID())
		a.SetToken(m.Token())
		a.SetBody(bytes.NewReader(body))
		b, err := a.MarshalWithEncoder(coder.DefaultCoder)
		if err != nil {
			return nil
		}
		return [][]byte{b}
	})
	// A device session proves the DTLS server's Serve is running before the
	// rig's cleanup closes it (downlink/coap: Close racing a Serve that has
	// not started yet trips -race on its WaitGroup).
	if _, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key}); err != nil {
		t.Fatal(err)
	}
	e := r.px.endpoint("sensor-17")
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("worker-%d-body", g)
			req := pool.NewMessage(context.Background())
			req.SetCode(codes.POST)
			req.SetType(message.Confirmable)
			req.SetBody(bytes.NewReader([]byte(want)))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c, err := r.px.upExchange(ctx, e, r.px.cfg.Central, req, "/echo", nil)
			cancel()
			if err != nil || string(c.body) != want {
				errs <- fmt.Sprintf("%s: got %q %v", want, c.body, err)
			}
		}()
	}
	waitFor(t, func() bool { return len(cen.received()) == workers })
	clk.advance(3 * time.Second)
	r.px.retransmitUp(clk.now())
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := mismatched.Load(); n != 0 {
		t.Errorf("%d retransmissions carried other bytes than their first copy", n)
	}
	if n := r.px.up.inFlightUp(); n != 0 {
		t.Fatalf("%d exchanges left in the table", n)
	}
}

// RequestTimeout ends an upstream exchange whose central never answers
// even while the retransmission clock stands still (an acknowledged
// request whose separate response never comes, here): the device gets
// 5.03 and the table is empty. The deadline is the wall clock's, checked
// by the proxy's retransmission goroutine: no timer per request.
func TestUpTableDeadline(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	r := newRig(t, func(c *Config) { c.Now = clk.now; c.RequestTimeout = 300 * time.Millisecond })
	cen := r.scriptedCentral(t, func(m *pool.Message, _ int) [][]byte {
		return [][]byte{encodeMsg(t, message.Acknowledgement, codes.Empty, m.MessageID(), nil)} // empty ACK, then silence
	})
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := d.Conn.Get(ctx, "/x")
	if err != nil {
		t.Fatalf("device request: %v", err)
	}
	if resp.Code() != codes.ServiceUnavailable {
		t.Fatalf("device got %v, want 5.03 after RequestTimeout", resp.Code())
	}
	if n := len(cen.received()); n != 1 {
		t.Fatalf("central received %d copies, want 1 (acknowledged: no retransmission)", n)
	}
	if n := r.px.up.inFlightUp(); n != 0 {
		t.Fatalf("%d exchanges left in the table", n)
	}
	if n := r.px.Stats.UpstreamErrors.Load(); n != 1 {
		t.Fatalf("UpstreamErrors = %d, want 1", n)
	}
}
