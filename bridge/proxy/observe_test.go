package proxy

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// rig is a proxy between two ipstacks (A: the bridge, B: central at
// 10.20.0.1) with the DTLS server on loopback and one PSK endpoint,
// sensor-17 (10.10.8.17).
type rig struct {
	pair *ipstacktest.Pair
	reg  *registry.Registry
	key  []byte
	px   *Proxy
	srv  *coap.Server
}

func newRig(t testing.TB, mod func(*Config)) *rig { return newRigWith(t, mod, nil) }

// newRigWith is newRig with a hook on the DTLS server's config.
func newRigWith(t testing.TB, mod func(*Config), coapMod func(*coap.Config)) *rig {
	t.Helper()
	pair := ipstacktest.NewPair(t, 0)
	if err := pair.B.AddAddress(netip.MustParsePrefix("10.20.0.1/32")); err != nil {
		t.Fatal(err)
	}
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	prov, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Stack: pair.A, Registry: reg, Central: netip.MustParseAddrPort("10.20.0.1:5683"), RequestTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	px, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	ccfg := coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, Handler: px.HandleDevice,
		OnSession: px.OnSession, OnReset: px.OnReset, Rate: -1}
	if coapMod != nil {
		coapMod(&ccfg)
	}
	srv, err := coap.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	px.SetSessions(srv.Session)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Close(); srv.Wait(); px.Close() })
	return &rig{pair: pair, reg: reg, key: prov.Endpoint.PSK, px: px, srv: srv}
}

// centralClient is a go-coap client (block-wise on) in central talking to
// coap://10.10.8.17.
func (r *rig) centralClient(t *testing.T) *udpclient.Conn {
	t.Helper()
	nc, err := r.pair.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.17:5683"))
	if err != nil {
		t.Fatal(err)
	}
	cc := newCoAPClient(context.Background(), nc, nil)
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	return cc
}

// note is one response or notification as an observer saw it.
type note struct {
	code   codes.Code
	seq    uint32
	hasObs bool
	body   []byte
	mid    int32
}

func noteOf(n *pool.Message) note {
	seq, err := n.Observe()
	b, _ := n.ReadBody()
	return note{code: n.Code(), seq: seq, hasObs: err == nil, body: b, mid: n.MessageID()}
}

func next(t *testing.T, ch chan note) note {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
		return note{}
	}
}

// observable is a CoAP resource "/obs" with observe support plus "/big"
// (GET: bigBody; POST: echo), served by a go-coap handler.
type observable struct {
	mu     sync.Mutex
	cc     *udpclient.Conn
	token  message.Token
	regs   int
	deregs int
	plain  int
	last   []byte // the representation last notified
}

var bigBody = func() []byte {
	b := make([]byte, 5000)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

func (o *observable) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	path, _ := r.Path()
	switch path {
	case "/obs":
		v, err := r.Observe()
		o.mu.Lock()
		defer o.mu.Unlock()
		switch {
		case err == nil && v == 0:
			o.regs++
			o.cc, o.token = w.Conn(), append(message.Token(nil), r.Token()...)
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("v0")),
				message.Option{ID: message.Observe, Value: uintOpt(5)})
		case err == nil && v == 1:
			o.deregs++
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("dereg")))
		default:
			o.plain++
			body := []byte("plain")
			if o.last != nil {
				// The current representation: also what the Block2
				// follow-ups of a large notification fetch.
				body = o.last
			}
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader(body))
		}
	case "/big":
		if r.Code() == codes.POST {
			b, _ := r.ReadBody()
			_ = w.SetResponse(codes.Changed, message.TextPlain, bytes.NewReader(b))
			return
		}
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader(bigBody))
	default:
		_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
	}
}

func (o *observable) counts() (regs, deregs, plain int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.regs, o.deregs, o.plain
}

// notify sends a NON notification on the last registration.
func (o *observable) notify(t *testing.T, seq uint32, body []byte) {
	t.Helper()
	o.mu.Lock()
	cc, tok := o.cc, o.token
	o.last = body
	o.mu.Unlock()
	m := cc.AcquireMessage(context.Background())
	defer cc.ReleaseMessage(m)
	m.SetToken(tok)
	m.SetCode(codes.Content)
	m.SetType(message.NonConfirmable)
	m.SetObserve(seq)
	m.SetContentFormat(message.TextPlain)
	m.SetBody(bytes.NewReader(body))
	if err := cc.WriteMessage(m); err != nil {
		t.Fatalf("notify: %v", err)
	}
}

func TestObserveCentralToDevice(t *testing.T) {
	stacktest.CheckGoroutines(t)
	r := newRig(t, nil)
	dev := &observable{}
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key, Handler: dev.handle})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-17") != nil })
	cc := r.centralClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	notes := make(chan note, 16)
	obs, err := cc.Observe(ctx, "/obs", func(n *pool.Message) { notes <- noteOf(n) })
	if err != nil {
		t.Fatal(err)
	}
	n0 := next(t, notes)
	if n0.code != codes.Content || string(n0.body) != "v0" || !n0.hasObs {
		t.Fatalf("first response: %+v", n0)
	}
	dev.notify(t, 6, []byte("v1"))
	n1 := next(t, notes)
	if string(n1.body) != "v1" || !n1.hasObs || n1.seq <= n0.seq {
		t.Fatalf("notification 1: %+v after seq %d", n1, n0.seq)
	}
	// A notification larger than a block: Block2 from the device,
	// reassembled by the bridge, Block2 again towards central.
	dev.notify(t, 7, bigBody)
	if n2 := next(t, notes); !bytes.Equal(n2.body, bigBody) || n2.seq <= n1.seq {
		t.Fatalf("big notification: %d bytes seq %d, want %d bytes after %d", len(n2.body), n2.seq, len(bigBody), n1.seq)
	}
	if down, _ := r.px.Observations("sensor-17"); down != 1 {
		t.Fatalf("got %d central observations, want 1", down)
	}
	// Central cancels (Observe:1): the device observation is cancelled too.
	if err := obs.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, dr, _ := dev.counts(); return dr == 1 })
	waitFor(t, func() bool { down, _ := r.px.Observations("sensor-17"); return down == 0 })

	// The device's DTLS session ends: the central observer gets a final 5.03.
	notes2 := make(chan note, 16)
	if _, err := cc.Observe(ctx, "/obs", func(n *pool.Message) { notes2 <- noteOf(n) }); err != nil {
		t.Fatal(err)
	}
	if n := next(t, notes2); string(n.body) != "v0" {
		t.Fatalf("re-registration: %+v", n)
	}
	_ = d.DTLS.Close()
	if n := next(t, notes2); n.code != codes.ServiceUnavailable || n.hasObs {
		t.Fatalf("after session end: %+v, want final 5.03", n)
	}
	waitFor(t, func() bool { down, _ := r.px.Observations("sensor-17"); return down == 0 })
	if regs, _, _ := dev.counts(); regs != 2 {
		t.Fatalf("device saw %d registrations, want 2", regs)
	}
	if got := r.px.Stats.NotificationsDown.Load(); got != 3 { // v1, big, 5.03
		t.Fatalf("NotificationsDown = %d, want 3", got)
	}
}

// rawCentral is a bare UDP socket in central for what go-coap's client
// would not do: RST a notification, or never acknowledge.
type rawCentral struct {
	nc net.Conn
	in chan *pool.Message
}

func (r *rig) rawCentral(t *testing.T) *rawCentral {
	t.Helper()
	nc, err := r.pair.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.17:5683"))
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawCentral{nc: nc, in: make(chan *pool.Message, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			m := pool.NewMessage(context.Background())
			if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err == nil {
				rc.in <- m
			}
		}
	}()
	t.Cleanup(func() { nc.Close(); <-done })
	return rc
}

func (rc *rawCentral) send(t *testing.T, typ message.Type, code codes.Code, mid int32, token string, observe int) {
	t.Helper()
	m := pool.NewMessage(context.Background())
	m.SetType(typ)
	m.SetCode(code)
	m.SetMessageID(mid)
	m.SetToken(message.Token(token))
	if code == codes.GET {
		_ = m.SetPath("/obs")
	}
	if observe >= 0 {
		m.SetObserve(uint32(observe))
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (rc *rawCentral) recv(t *testing.T) *pool.Message {
	t.Helper()
	select {
	case m := <-rc.in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing from the bridge within 10s")
		return nil
	}
}

func TestObserveCentralResetAndSilence(t *testing.T) {
	// The RST below must reach the proxy before the notification it
	// answers gives up (the timeout doubles over 4 retransmissions: 31
	// timeouts in all). At 20 ms that was 620 ms, which a loaded make
	// test run exceeded once: the observation timed out instead of being
	// cancelled (ObserveCancelled 0). 100 ms gives 3.1 s.
	r := newRig(t, func(c *Config) { c.ObserveAckTimeout = 100 * time.Millisecond; c.MaxObservations = 1 })
	dev := &observable{}
	if _, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key, Handler: dev.handle}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-17") != nil })
	rc := r.rawCentral(t)
	rc.send(t, message.Confirmable, codes.GET, 100, "tok1", 0)
	if m := rc.recv(t); m.Type() != message.Acknowledgement || m.MessageID() != 100 || !m.HasOption(message.Observe) {
		t.Fatalf("registration answer: %v", m)
	}
	// Over MaxObservations (1): answered once, without Observe.
	rc.send(t, message.Confirmable, codes.GET, 101, "tok2", 0)
	if m := rc.recv(t); m.MessageID() != 101 || m.HasOption(message.Observe) {
		t.Fatalf("over the bound: %v, want a plain answer", m)
	}
	if got := r.px.Stats.ObserveRefused.Load(); got != 1 {
		t.Fatalf("ObserveRefused = %d, want 1", got)
	}
	// RST on a notification ends both observations.
	dev.notify(t, 6, []byte("v1"))
	n := rc.recv(t)
	if n.Type() != message.Confirmable || string(n.Token()) != "tok1" {
		t.Fatalf("notification: %v", n)
	}
	rc.send(t, message.Reset, codes.Empty, n.MessageID(), "", -1)
	waitFor(t, func() bool { _, dr, _ := dev.counts(); return dr == 1 })
	if down, _ := r.px.Observations("sensor-17"); down != 0 {
		t.Fatalf("%d observations left after RST", down)
	}
	// An observer that never acknowledges: 4 retransmissions, then dropped
	// and the device observation cancelled.
	rc.send(t, message.Confirmable, codes.GET, 102, "tok3", 0)
	m := rc.recv(t)
	// A retransmission of the notification the RST answered may have left
	// before the RST arrived (its timer is short here): skip those copies.
	for m.MessageID() == n.MessageID() && string(m.Token()) == "tok1" {
		m = rc.recv(t)
	}
	if m.MessageID() != 102 {
		t.Fatalf("registration answer: %v", m)
	}
	dev.notify(t, 7, []byte("v2"))
	first := rc.recv(t)
	for i := 0; i < maxRetransmit; i++ {
		if m := rc.recv(t); m.MessageID() != first.MessageID() {
			t.Fatalf("retransmission %d: MID %d, want %d", i, m.MessageID(), first.MessageID())
		}
	}
	waitFor(t, func() bool { return r.px.Stats.ObserveTimeouts.Load() == 1 })
	waitFor(t, func() bool { _, dr, _ := dev.counts(); return dr == 2 })
	if got := r.px.Stats.ObserveCancelled.Load(); got != 1 {
		t.Fatalf("ObserveCancelled = %d, want 1", got)
	}
	select {
	case m := <-rc.in:
		t.Fatalf("unexpected message after the observer was dropped: %v", m)
	default:
	}
}

// peerConn is one central peer's view of a shared netstack UDP socket, so
// that a go-coap conn (block-wise, observe) can serve it.
type peerConn struct {
	pc   net.PacketConn
	peer net.Addr
	in   chan []byte
	done chan struct{}
	once sync.Once
}

func (c *peerConn) Read(b []byte) (int, error) {
	select {
	case p := <-c.in:
		return copy(b, p), nil
	case <-c.done:
		return 0, net.ErrClosed
	}
}
func (c *peerConn) Write(b []byte) (int, error)      { return c.pc.WriteTo(b, c.peer) }
func (c *peerConn) Close() error                     { c.once.Do(func() { close(c.done) }); return nil }
func (c *peerConn) LocalAddr() net.Addr              { return c.pc.LocalAddr() }
func (c *peerConn) RemoteAddr() net.Addr             { return c.peer }
func (c *peerConn) SetDeadline(time.Time) error      { return nil }
func (c *peerConn) SetReadDeadline(time.Time) error  { return nil }
func (c *peerConn) SetWriteDeadline(time.Time) error { return nil }

// goCentral serves CoAP with h at 10.20.0.1:5683 in central, one go-coap
// conn per peer.
func (r *rig) goCentral(t *testing.T, h udpclient.HandlerFunc) {
	t.Helper()
	pc, err := r.pair.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []*udpclient.Conn
	go func() {
		defer close(done)
		peers := map[string]*peerConn{}
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				for _, p := range peers {
					_ = p.Close()
				}
				return
			}
			p := peers[from.String()]
			if p == nil {
				p = &peerConn{pc: pc, peer: from, in: make(chan []byte, 64), done: make(chan struct{})}
				peers[from.String()] = p
				conns = append(conns, newCoAPConn(context.Background(), p, nil, h))
			}
			select {
			case p.in <- append([]byte(nil), buf[:n]...):
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = pc.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
			<-c.Done()
		}
	})
}

func TestObserveDeviceToCentral(t *testing.T) {
	r := newRig(t, nil)
	cen := &observable{}
	r.goCentral(t, cen.handle)
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	notes := make(chan note, 16)
	obs, err := d.Conn.Observe(ctx, "/obs", func(n *pool.Message) { notes <- noteOf(n) })
	if err != nil {
		t.Fatal(err)
	}
	n0 := next(t, notes)
	if string(n0.body) != "v0" || !n0.hasObs {
		t.Fatalf("first response: %+v", n0)
	}
	cen.notify(t, 6, []byte("v1"))
	n1 := next(t, notes)
	if string(n1.body) != "v1" || n1.seq <= n0.seq {
		t.Fatalf("notification: %+v after seq %d", n1, n0.seq)
	}
	cen.notify(t, 7, bigBody) // Block2 on both legs
	if n2 := next(t, notes); !bytes.Equal(n2.body, bigBody) || n2.seq <= n1.seq {
		t.Fatalf("big notification: %d bytes seq %d, want %d after %d", len(n2.body), n2.seq, len(bigBody), n1.seq)
	}
	if _, up := r.px.Observations("sensor-17"); up != 1 {
		t.Fatalf("got %d device observations, want 1", up)
	}
	if err := obs.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, dr, _ := cen.counts(); return dr == 1 })
	waitFor(t, func() bool { _, up := r.px.Observations("sensor-17"); return up == 0 })

	// A device RST on a notification cancels upstream.
	notes2 := make(chan note, 4)
	if _, err := d.Conn.Observe(ctx, "/obs", func(n *pool.Message) { notes2 <- noteOf(n) }); err != nil {
		t.Fatal(err)
	}
	next(t, notes2)
	waitFor(t, func() bool { return r.px.Stats.ObservationsUp.Load() == 2 })
	cen.notify(t, 8, []byte("v3"))
	n3 := next(t, notes2)
	// go-coap's client does not send a token-less RST through WriteMessage:
	// write the datagram on the DTLS session directly.
	rst := pool.NewMessage(ctx)
	rst.SetType(message.Reset)
	rst.SetCode(codes.Empty)
	rst.SetMessageID(n3.mid)
	b, err := rst.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DTLS.Write(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, dr, _ := cen.counts(); return dr == 2 })
	waitFor(t, func() bool { _, up := r.px.Observations("sensor-17"); return up == 0 })

	// Session end cancels upstream.
	if _, err := d.Conn.Observe(ctx, "/obs", func(*pool.Message) {}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.px.Stats.ObservationsUp.Load() == 3 })
	_ = d.DTLS.Close()
	waitFor(t, func() bool { return r.srv.Session("sensor-17") == nil })
	waitFor(t, func() bool { _, dr, _ := cen.counts(); return dr == 3 })
	waitFor(t, func() bool { _, up := r.px.Observations("sensor-17"); return up == 0 })
	if got := r.px.Stats.Notifications.Load(); got != 3 {
		t.Fatalf("Notifications = %d, want 3", got)
	}
	if got := r.px.Stats.ObserveCancelled.Load(); got != 2 { // Observe:1 and RST
		t.Fatalf("ObserveCancelled = %d, want 2", got)
	}
}

// TestBlockwise moves bodies larger than 4 KB both ways: Block2 responses
// and Block1 uploads between central and device, and between device and
// central.
func TestBlockwise(t *testing.T) {
	r := newRig(t, nil)
	cen := &observable{}
	r.goCentral(t, cen.handle)
	dev := &observable{}
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key, Handler: dev.handle})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-17") != nil })
	cc := r.centralClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	upload := bytes.Repeat([]byte("0123456789"), 600) // 6000 bytes
	check := func(what string, resp *pool.Message, err error, want codes.Code, body []byte) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, _ := resp.ReadBody()
		if resp.Code() != want || !bytes.Equal(b, body) {
			t.Fatalf("%s: got %v with %d bytes, want %v with %d", what, resp.Code(), len(b), want, len(body))
		}
	}
	resp, err := cc.Get(ctx, "/big")
	check("central GET device /big", resp, err, codes.Content, bigBody)
	resp, err = cc.Post(ctx, "/big", message.TextPlain, bytes.NewReader(upload))
	check("central POST device /big", resp, err, codes.Changed, upload)
	resp, err = d.Conn.Get(ctx, "/big")
	check("device GET central /big", resp, err, codes.Content, bigBody)
	resp, err = d.Conn.Post(ctx, "/big", message.TextPlain, bytes.NewReader(upload))
	check("device POST central /big", resp, err, codes.Changed, upload)
	if r.px.Stats.BlockUploads.Load() != 1 || r.px.Stats.BlockDownloads.Load() != 2 || r.px.Stats.BlockErrors.Load() != 0 {
		t.Fatalf("BlockUploads=%d BlockDownloads=%d BlockErrors=%d, want 1 2 0", r.px.Stats.BlockUploads.Load(), r.px.Stats.BlockDownloads.Load(), r.px.Stats.BlockErrors.Load())
	}
}

// TestObserveProxyURI: a device observes a destination named by Proxy-Uri
// (allowed by its allow-list); notifications come back down.
func TestObserveProxyURI(t *testing.T) {
	r := newRig(t, nil)
	ep, _ := r.reg.ByName("sensor-17")
	ep.Allow = []string{"10.20.0.1:5683"}
	if _, err := r.reg.Replace(ep); err != nil {
		t.Fatal(err)
	}
	cen := &observable{}
	r.goCentral(t, cen.handle)
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := d.Conn.NewObserveRequest(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	req.SetOptionString(message.ProxyURI, "coap://10.20.0.1:5683/obs")
	notes := make(chan note, 4)
	if _, err := d.Conn.DoObserve(req, func(n *pool.Message) { notes <- noteOf(n) }); err != nil {
		t.Fatal(err)
	}
	if n := next(t, notes); string(n.body) != "v0" || !n.hasObs {
		t.Fatalf("first response: %+v", n)
	}
	waitFor(t, func() bool { return r.px.Stats.ObservationsUp.Load() == 1 })
	cen.notify(t, 6, []byte("v1"))
	if n := next(t, notes); string(n.body) != "v1" || !n.hasObs {
		t.Fatalf("notification: %+v", n)
	}
	if regs, _, _ := cen.counts(); regs != 1 {
		t.Fatalf("central saw %d registrations, want 1", regs)
	}
}

// TestObserveQueuedForSleepingDevice: a registration sent while the device
// sleeps waits in the queue and is registered on the device when it wakes.
func TestObserveQueuedForSleepingDevice(t *testing.T) {
	r := newRig(t, nil)
	cc := r.centralClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	notes := make(chan note, 4)
	registered := make(chan error, 1)
	go func() {
		_, err := cc.Observe(ctx, "/obs", func(n *pool.Message) { notes <- noteOf(n) })
		registered <- err
	}()
	waitFor(t, func() bool { return r.px.Queued("sensor-17") == 1 })
	dev := &observable{}
	if _, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key, Handler: dev.handle}); err != nil {
		t.Fatal(err)
	}
	if err := <-registered; err != nil {
		t.Fatal(err)
	}
	if n := next(t, notes); string(n.body) != "v0" || !n.hasObs {
		t.Fatalf("first response: %+v", n)
	}
	dev.notify(t, 6, []byte("v1"))
	if n := next(t, notes); string(n.body) != "v1" {
		t.Fatalf("notification: %+v", n)
	}
}
