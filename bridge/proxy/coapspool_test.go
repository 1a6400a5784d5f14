package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// dedupSink is a central CoAP service on the central stack that, like a
// real CoAP server (RFC 7252 section 4.5), processes each (source, Message
// ID) once and answers duplicates from its cache; while down it drops
// everything, and with dropAcks it processes requests but loses its
// ACKs (so the forwarder retransmits).
type dedupSink struct {
	down, dropAcks atomic.Bool
	mu             sync.Mutex
	bodies         []string                 // processed, in order
	from           map[string]bool          // sources seen
	seen           map[string]bool          // source|MID processed
	tokens         map[string]message.Token // body -> token
	dups           int
}

func startDedupSink(t *testing.T, pair *ipstacktest.Pair, addr netip.AddrPort) *dedupSink {
	t.Helper()
	pc, err := pair.B.ListenUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &dedupSink{from: map[string]bool{}, seen: map[string]bool{}, tokens: map[string]message.Token{}}
	coaptest.Serve(t, pc, func(m *pool.Message, from net.Addr) [][]byte {
		if s.down.Load() || !isRequest(m.Code()) {
			return nil
		}
		key := fmt.Sprintf("%s|%d", from, m.MessageID())
		body, _ := m.ReadBody()
		s.mu.Lock()
		if s.seen[key] {
			s.dups++
		} else {
			s.seen[key] = true
			s.bodies = append(s.bodies, string(body))
			s.from[from.String()] = true
			s.tokens[string(body)] = append(message.Token(nil), m.Token()...)
		}
		s.mu.Unlock()
		if s.dropAcks.Load() {
			return nil
		}
		return coaptest.Reply(m, codes.Changed, nil)
	})
	return s
}

func (s *dedupSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// TestCoapSpoolOutage: during an outage a device's telemetry POSTs (with
// a zero-length token and with a token) are answered 2.04 at once from the
// spool, a passthrough request gets 5.03 with Max-Age, and the device's
// session stays up; when the uplink is back the spool drains in order from
// the endpoint's own address and port, each message processed once at
// central although its ACKs were lost and it was retransmitted.
func TestCoapSpoolOutage(t *testing.T) {
	pair := ipstacktest.NewPair(t, 0)
	centralAddr := netip.MustParseAddrPort("10.20.0.1:5683")
	if err := pair.B.AddAddress(netip.PrefixFrom(centralAddr.Addr(), 32)); err != nil {
		t.Fatal(err)
	}
	sink := startDedupSink(t, pair, centralAddr)
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	prov, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	px, err := New(Config{Stack: pair.A, Registry: reg, Central: centralAddr, RequestTimeout: 2 * time.Second,
		Spool: sp, RetryAfter: 7 * time.Second, UplinkUp: up.Load})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	srv, err := coap.New(coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, Handler: px.HandleDevice, OnSession: px.OnSession})
	if err != nil {
		t.Fatal(err)
	}
	px.SetSessions(srv.Session)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Close(); srv.Wait(); px.Close(); _ = sp.Close() })

	d, err := coaptest.Dial(t, srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: prov.Endpoint.PSK})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string, tok message.Token) *pool.Message {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := d.Conn.NewPostRequest(ctx, path, message.AppJSON, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.SetToken(tok)
		resp, err := d.Conn.Do(req)
		if err != nil {
			t.Fatalf("POST %s %s: %v", path, body, err)
		}
		return resp
	}
	// Outage: uplink down, central unreachable.
	sink.down.Store(true)
	var want []string
	for i := range 6 {
		var tok message.Token // zero-length for even i
		if i%2 == 1 {
			tok = message.Token{0xA0, 1, 2, 3, 4, 5, 6, byte(i)}
		}
		body := fmt.Sprintf(`{"seq":%d}`, i)
		if r := post("/telemetry", body, tok); r.Code() != codes.Changed {
			t.Fatalf("spooled POST #%d: %v, want 2.04", i, r.Code())
		}
		want = append(want, body)
	}
	r := post("/config", "x", nil)
	maxAge, err := r.GetOptionUint32(message.MaxAge)
	if r.Code() != codes.ServiceUnavailable || err != nil || maxAge != 7 {
		t.Fatalf("passthrough during outage: %v Max-Age %d (%v), want 5.03 Max-Age 7", r.Code(), maxAge, err)
	}
	if n, _ := px.Spooled("sensor-17"); n != 6 {
		t.Fatalf("spooled %d, want 6", n)
	}
	// The uplink comes back but central's ACKs are lost for a while:
	// the forwarder retransmits, central processes each message once.
	sink.down.Store(false)
	sink.dropAcks.Store(true)
	up.Store(true)
	px.UplinkChanged(true)
	waitFor(t, func() bool { return len(sink.got()) >= 1 })
	time.Sleep(2500 * time.Millisecond) // ≥ one retransmission of the head
	sink.dropAcks.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for n, _ := px.Spooled("sensor-17"); n > 0; n, _ = px.Spooled("sensor-17") {
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained: %d left, central got %v", n, sink.got())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := sink.got(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("central processed %v, want %v in order, once each", got, want)
	}
	sink.mu.Lock() // the sink goroutine keeps writing its maps: read them under the lock
	dups, nfrom, fromEndpoint, from := sink.dups, len(sink.from), sink.from["10.10.8.17:5683"], fmt.Sprint(sink.from)
	sink.mu.Unlock()
	if nfrom != 1 || !fromEndpoint {
		t.Fatalf("central saw sources %v, want only 10.10.8.17:5683", from)
	}
	if dups == 0 || px.Stats.ForwardRetransmits.Load() == 0 {
		t.Fatalf("no retransmission seen (dups %d, retransmits %d): the test did not exercise dedup", dups, px.Stats.ForwardRetransmits.Load())
	}
	if px.Stats.Spooled.Load() != 6 || px.Stats.Forwarded.Load() != 6 || px.Stats.Unavailable.Load() != 1 {
		t.Fatalf("stats: spooled %d forwarded %d unavailable %d, want 6 6 1", px.Stats.Spooled.Load(), px.Stats.Forwarded.Load(), px.Stats.Unavailable.Load())
	}
	// Uplink up again: the device's session is the same one.
	if r := post("/telemetry", `{"seq":6}`, nil); r.Code() != codes.Changed {
		t.Fatalf("after recovery: %v", r.Code())
	}
	select {
	case <-d.Conn.Done():
		t.Fatal("device session closed")
	default:
	}
	t.Logf("central: %d processed, %d duplicates answered from its cache; forwarder retransmits %d", len(sink.got()), dups, px.Stats.ForwardRetransmits.Load())
}

func TestMatchMode(t *testing.T) {
	modes := map[string]Mode{"/telemetry": ModeSpool, "/t/*": ModeSpool, "/t/cfg/*": ModePassthrough}
	for path, want := range map[string]Mode{"/telemetry": ModeSpool, "/telemetry/x": ModePassthrough, "/t/a": ModeSpool,
		"/t/cfg/1": ModePassthrough, "/other": ModePassthrough} {
		if got := MatchMode(modes, path); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}

// TestCoapSpoolFairUnderFlood (issue 18): during an outage one device
// floods telemetry until its own share of the CoAP spool is full (then it
// gets 5.03 with Max-Age); another device's telemetry is still answered
// 2.04 and, after the outage, every one of its messages reaches central.
// Bound held: the flood's live bytes ≤ its share (16 KiB of 128 KiB).
func TestCoapSpoolFairUnderFlood(t *testing.T) {
	pair := ipstacktest.NewPair(t, 0)
	centralAddr := netip.MustParseAddrPort("10.20.0.1:5683")
	if err := pair.B.AddAddress(netip.PrefixFrom(centralAddr.Addr(), 32)); err != nil {
		t.Fatal(err)
	}
	sink := startDedupSink(t, pair, centralAddr)
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	var psk [][]byte
	for _, n := range []string{"flood-1", "quiet-2"} {
		prov, err := registry.Provision(reg, nil, registry.Request{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		psk = append(psk, prov.Endpoint.PSK)
	}
	const share = 16 << 10
	sp, err := spool.Open(spool.Config{Dir: t.TempDir(), MaxBytes: 8 * share, EndpointMaxBytes: share})
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	px, err := New(Config{Stack: pair.A, Registry: reg, Central: centralAddr, Spool: sp, UplinkUp: up.Load})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	srv, err := coap.New(coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, Handler: px.HandleDevice, OnSession: px.OnSession})
	if err != nil {
		t.Fatal(err)
	}
	px.SetSessions(srv.Session)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Close(); srv.Wait(); px.Close(); _ = sp.Close() })
	flood, err := coaptest.Dial(t, srv.Addr().String(), coaptest.Options{Identity: "flood-1", Key: psk[0]})
	if err != nil {
		t.Fatal(err)
	}
	quiet, err := coaptest.Dial(t, srv.Addr().String(), coaptest.Options{Identity: "quiet-2", Key: psk[1]})
	if err != nil {
		t.Fatal(err)
	}
	post := func(d *coaptest.Device, body string) codes.Code {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := d.Conn.Post(ctx, "/telemetry", message.AppJSON, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code()
	}
	sink.down.Store(true)
	big := bytes.Repeat([]byte("x"), 900)
	var floodOK, floodRefused int
	var want []string
	for i := range 60 {
		switch post(flood, fmt.Sprintf(`{"flood":%d,"pad":"%s"}`, i, big)) {
		case codes.Changed:
			floodOK++
		case codes.ServiceUnavailable:
			floodRefused++
		}
		if i%3 == 0 {
			body := fmt.Sprintf(`{"quiet":%d}`, i)
			if c := post(quiet, body); c != codes.Changed {
				t.Fatalf("quiet device's telemetry #%d answered %v during the flood, want 2.04", i, c)
			}
			want = append(want, body)
		}
	}
	_, floodBytes := px.Spooled("flood-1")
	t.Logf("flood: %d spooled (%d bytes, share %d), %d refused 5.03; quiet: %d spooled", floodOK, floodBytes, share, floodRefused, len(want))
	if floodRefused == 0 || floodBytes > share {
		t.Fatalf("flood not bounded by its share: refused %d, %d bytes", floodRefused, floodBytes)
	}
	sink.down.Store(false)
	up.Store(true)
	px.UplinkChanged(true)
	waitFor(t, func() bool { n, _ := px.Spooled("quiet-2"); return n == 0 })
	var got []string
	for _, b := range sink.got() {
		if strings.Contains(b, "quiet") {
			got = append(got, b)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("central got the quiet device's %v, want %v", got, want)
	}
}

// TestCoapSpoolResumesBoundMID: a message the previous bridge process had
// sent (its Message ID bound in the spool) before it was killed is sent
// again after the restart under the same Message ID from the same source,
// so central recognises it as a retransmission (at most once).
func TestCoapSpoolResumesBoundMID(t *testing.T) {
	dir := t.TempDir()
	req := pool.NewMessage(context.Background())
	req.SetCode(codes.POST)
	_ = req.SetPath("/telemetry")
	req.SetBody(bytes.NewReader([]byte(`{"seq":1}`)))
	b, err := encodeSpooled(req, "/telemetry")
	if err != nil {
		t.Fatal(err)
	}
	old, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := old.Append(spool.Message{Endpoint: "sensor-17", Topic: "/telemetry", QoS: 1, Payload: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Bind("sensor-17", seq, 4242, 1, true); err != nil {
		t.Fatal(err)
	}
	_ = old.Close()

	pair := ipstacktest.NewPair(t, 0)
	centralAddr := netip.MustParseAddrPort("10.20.0.1:5683")
	if err := pair.B.AddAddress(netip.PrefixFrom(centralAddr.Addr(), 32)); err != nil {
		t.Fatal(err)
	}
	sink := startDedupSink(t, pair, centralAddr)
	sink.mu.Lock()
	sink.seen["10.10.8.17:5683|4242"] = true // central processed it before the kill
	sink.mu.Unlock()
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	if _, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"}); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(Config{Stack: pair.A, Registry: reg, Central: centralAddr, Spool: sp})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close(); _ = sp.Close() })
	waitFor(t, func() bool { n, _ := px.Spooled("sensor-17"); return n == 0 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// More than one duplicate is fine: the forwarder retransmits by real
	// time, and on a loaded box (or -race) an answer can come after its
	// ACK timeout; what matters is that none was processed anew.
	if sink.dups < 1 || len(sink.bodies) != 0 {
		t.Fatalf("central: %d duplicates answered from cache, %d processed anew (%v); want the resend recognised (≥1, 0)", sink.dups, len(sink.bodies), sink.bodies)
	}
}
