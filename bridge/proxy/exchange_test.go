package proxy

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// blockingDevice dials sensor-17 with a handler that counts requests and
// answers 2.05 "once" after release is closed.
func blockingDevice(t *testing.T, r *rig, hits *atomic.Int64, release chan struct{}) {
	t.Helper()
	_, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key,
		Handler: func(w *responsewriter.ResponseWriter[*udpclient.Conn], _ *pool.Message) {
			hits.Add(1)
			<-release
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("once")))
		}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-17") != nil })
}

func wire(t *testing.T, m *pool.Message) []byte {
	t.Helper()
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A central CON retransmitted while the device is still answering is
// dropped, and retransmitted after the answer is answered again with the
// same bytes: the device sees the request once.
func TestDedupCentralToDevice(t *testing.T) {
	r := newRig(t, nil)
	var hits atomic.Int64
	release := make(chan struct{})
	blockingDevice(t, r, &hits, release)
	rc := r.rawCentral(t)

	rc.send(t, message.Confirmable, codes.GET, 0x1234, "tk", -1)
	waitFor(t, func() bool { return hits.Load() == 1 })
	rc.send(t, message.Confirmable, codes.GET, 0x1234, "tk", -1) // retransmission, first copy in progress
	waitFor(t, func() bool { return r.px.Stats.Duplicates.Load() == 1 })
	close(release)
	first := rc.recv(t)
	if first.Code() != codes.Content || first.Type() != message.Acknowledgement || first.MessageID() != 0x1234 {
		t.Fatalf("first answer: %v %v mid %d", first.Code(), first.Type(), first.MessageID())
	}
	rc.send(t, message.Confirmable, codes.GET, 0x1234, "tk", -1) // retransmission after the answer
	again := rc.recv(t)
	if !bytes.Equal(wire(t, first), wire(t, again)) {
		t.Fatalf("duplicate answered with different bytes:\n%x\n%x", wire(t, first), wire(t, again))
	}
	// A new message ID is a new request.
	rc.send(t, message.Confirmable, codes.GET, 0x1235, "tk", -1)
	if m := rc.recv(t); m.MessageID() != 0x1235 || m.Code() != codes.Content {
		t.Fatalf("next request: %v mid %d", m.Code(), m.MessageID())
	}
	if got := hits.Load(); got != 2 {
		t.Fatalf("device saw %d requests, want 2 (one per message ID)", got)
	}
	st := &r.px.Stats
	if st.Downstream.Load() != 2 || st.Duplicates.Load() != 2 || st.DuplicatesAnswered.Load() != 1 {
		t.Fatalf("Downstream=%d Duplicates=%d DuplicatesAnswered=%d, want 2 2 1",
			st.Downstream.Load(), st.Duplicates.Load(), st.DuplicatesAnswered.Load())
	}
}

// rawDevice is a PSK DTLS session to the bridge without a CoAP layer: the
// test writes and reads datagrams itself.
func rawDevice(t *testing.T, r *rig) *dtls.Conn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key := r.key
	dc, err := dtls.ClientWithOptions(pc, r.srv.Addr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte("sensor-17")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.Close(); _ = pc.Close() })
	return dc
}

// exchangeRaw writes b until a datagram comes back (every 500 ms, at
// most 20 times) and returns it.
func exchangeRaw(t *testing.T, dc *dtls.Conn, b []byte) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	for range 20 {
		if _, err := dc.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = dc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := dc.Read(buf); err == nil {
			return buf[:n]
		}
	}
	t.Fatal("no answer from the bridge within 20 transmissions")
	return nil
}

// A device CON retransmitted after its answer reaches central once and is
// answered twice with the same bytes (go-coap's per-session response
// cache; the exchange stage relies on it).
func TestDedupDeviceToCentral(t *testing.T) {
	r := newRig(t, nil)
	var hits atomic.Int64
	r.goCentral(t, func(w *responsewriter.ResponseWriter[*udpclient.Conn], _ *pool.Message) {
		hits.Add(1)
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("central")))
	})
	dc := rawDevice(t, r)
	req := pool.NewMessage(context.Background())
	req.SetType(message.Confirmable)
	req.SetCode(codes.GET)
	req.SetMessageID(0x4321)
	req.SetToken(message.Token("dv"))
	_ = req.SetPath("/x")
	b := wire(t, req)
	first := exchangeRaw(t, dc, b)
	// The device retransmits (it missed the answer). A copy that arrives
	// while go-coap still counts the first as in progress is dropped, so
	// it retransmits as a device would until answered.
	again := exchangeRaw(t, dc, b)
	if !bytes.Equal(first, again) {
		t.Fatalf("duplicate answered with different bytes:\n%x\n%x", first, again)
	}
	m := pool.NewMessage(context.Background())
	if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, first); err != nil || m.Code() != codes.Content || m.MessageID() != 0x4321 {
		t.Fatalf("answer: %v %v mid %d", err, m.Code(), m.MessageID())
	}
	if hits.Load() != 1 || r.px.Stats.Upstream.Load() != 1 {
		t.Fatalf("central saw %d requests, Upstream=%d; want 1 1", hits.Load(), r.px.Stats.Upstream.Load())
	}
}

// maxAge returns m's Max-Age, or -1.
func maxAge(m *pool.Message) int {
	v, err := m.GetOptionUint32(message.MaxAge)
	if err != nil {
		return -1
	}
	return int(v)
}

// With NStart 1, a second central request to an endpoint with one in
// flight is answered 5.03 with Max-Age at once; so is a second device
// request while one is upstream. The bound held: the device and central
// each see exactly one request at a time.
func TestOverloadEndpoint(t *testing.T) {
	r := newRig(t, func(c *Config) { c.NStart = 1; c.OverloadMaxAge = 3 * time.Second })
	var hits atomic.Int64
	release := make(chan struct{})
	blockingDevice(t, r, &hits, release)
	rc := r.rawCentral(t)
	rc.send(t, message.Confirmable, codes.GET, 1, "a", -1)
	waitFor(t, func() bool { return hits.Load() == 1 })
	rc.send(t, message.Confirmable, codes.GET, 2, "b", -1)
	m := rc.recv(t)
	if m.Code() != codes.ServiceUnavailable || m.MessageID() != 2 || string(m.Token()) != "b" || maxAge(m) != 3 {
		t.Fatalf("overload answer: %v mid %d token %q Max-Age %d, want 5.03 2 b 3", m.Code(), m.MessageID(), m.Token(), maxAge(m))
	}
	close(release)
	if m := rc.recv(t); m.Code() != codes.Content || m.MessageID() != 1 {
		t.Fatalf("first request: %v mid %d", m.Code(), m.MessageID())
	}
	if hits.Load() != 1 || r.px.Stats.OverloadEndpoint.Load() != 1 {
		t.Fatalf("device saw %d, OverloadEndpoint=%d; want 1 1", hits.Load(), r.px.Stats.OverloadEndpoint.Load())
	}

	// Device → central needs no test here: go-coap handles one DTLS
	// session's requests one at a time (its read loop is only replaced
	// while a handler waits on that same conn), so a device never has two
	// requests upstream; the up slots count for MaxInFlight
	// (TestOverloadBridge).
}

// The bridge-wide bound: with MaxInFlight 1, a device request upstream
// makes a central request to the device wait for nothing: 5.03.
func TestOverloadBridge(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxInFlight = 1 })
	var up atomic.Int64
	hold := make(chan struct{})
	r.goCentral(t, func(w *responsewriter.ResponseWriter[*udpclient.Conn], _ *pool.Message) {
		up.Add(1)
		<-hold
		_ = w.SetResponse(codes.Content, message.TextPlain, nil)
	})
	d, err := coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: r.key})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-17") != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = d.Conn.Get(ctx, "/slow") }()
	waitFor(t, func() bool { return up.Load() == 1 })
	rc := r.rawCentral(t)
	rc.send(t, message.Confirmable, codes.GET, 7, "c", -1)
	if m := rc.recv(t); m.Code() != codes.ServiceUnavailable || maxAge(m) != 2 {
		t.Fatalf("central request during a full bridge: %v Max-Age %d, want 5.03 2", m.Code(), maxAge(m))
	}
	close(hold)
	<-done
	if r.px.Stats.Downstream.Load() != 0 || r.px.Stats.OverloadBridge.Load() != 1 {
		t.Fatalf("Downstream=%d OverloadBridge=%d; want 0 1", r.px.Stats.Downstream.Load(), r.px.Stats.OverloadBridge.Load())
	}
}

// The dedup table is bounded and forgets after EXCHANGE_LIFETIME.
func TestExchangesBounded(t *testing.T) {
	var x exchanges
	var evicted uint64
	t0 := time.Unix(1000, 0)
	for i := range 1000 {
		if what, _ := x.begin(t0, exKey{mid: uint16(i)}, 16, &evicted); what != exNew {
			t.Fatalf("mid %d: %d, want new", i, what)
		}
	}
	if n := x.remembered(); n != 16 || evicted != 1000-16 || len(x.order) > 32 {
		t.Fatalf("remembered %d, evicted %d, order %d; want 16 984 ≤32", n, evicted, len(x.order))
	}
	x.answered(exKey{mid: 999}, []byte("a"))
	if what, b := x.begin(t0.Add(time.Second), exKey{mid: 999}, 16, &evicted); what != exDuplicate || string(b) != "a" {
		t.Fatalf("duplicate: %d %q", what, b)
	}
	if what, _ := x.begin(t0.Add(time.Second), exKey{mid: 998}, 16, &evicted); what != exInProgress {
		t.Fatalf("unanswered duplicate: %d, want in progress", what)
	}
	// After EXCHANGE_LIFETIME the message ID is new again and the old
	// entries go without counting as evictions.
	before := evicted
	if what, _ := x.begin(t0.Add(ExchangeLifetime), exKey{mid: 999}, 16, &evicted); what != exNew {
		t.Fatalf("after EXCHANGE_LIFETIME: %d, want new", what)
	}
	if n := x.remembered(); n != 1 || evicted != before {
		t.Fatalf("remembered %d evicted %d after expiry, want 1 %d", n, evicted, before)
	}
}
