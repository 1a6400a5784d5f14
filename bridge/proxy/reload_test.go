package proxy

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
)

// TestReconcile: a reload removes an endpoint (its DTLS session, central
// observation and address go), answers a removed sleeping endpoint's
// queued request 5.03, re-keys one (old key refused, new key served),
// widens another's allow-list without touching its session, and adds a
// new one; the untouched sessions stay up.
func TestReconcile(t *testing.T) {
	r := newRig(t, nil)
	cen := &observable{}
	r.goCentral(t, cen.handle)
	for _, n := range []string{"sensor-18", "sensor-19", "sensor-20"} {
		p, err := registry.Provision(r.reg, nil, registry.Request{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.px.AddEndpoint(p.Endpoint); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(name string, key []byte) (*coaptest.Device, error) {
		dev := &observable{}
		return coaptest.Dial(t, r.srv.Addr().String(), coaptest.Options{Identity: name, Key: key, Handler: dev.handle})
	}
	keyOf := func(name string) []byte { ep, _ := r.reg.ByName(name); return ep.PSK }
	d17, err := dial("sensor-17", r.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial("sensor-18", keyOf("sensor-18")); err != nil {
		t.Fatal(err)
	}
	if _, err := dial("sensor-19", keyOf("sensor-19")); err != nil {
		t.Fatal(err)
	}
	// The server registers a session just after the device's handshake.
	waitFor(t, func() bool {
		return r.srv.Session("sensor-17") != nil && r.srv.Session("sensor-18") != nil && r.srv.Session("sensor-19") != nil
	})
	s17 := r.srv.Session("sensor-17")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	// sensor-17 may not reach central through Proxy-Uri yet.
	proxyGet := func() codes.Code {
		t.Helper()
		req, err := d17.Conn.NewGetRequest(ctx, "/")
		if err != nil {
			t.Fatal(err)
		}
		req.SetOptionString(message.ProxyURI, "coap://10.20.0.1:5683/obs")
		resp, err := d17.Conn.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code()
	}
	if c := proxyGet(); c != codes.Forbidden {
		t.Fatalf("Proxy-Uri before reload: %v, want 4.03", c)
	}
	// Central observes sensor-18; a request waits for sleeping sensor-20.
	nc18, err := r.pair.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.18:5683"))
	if err != nil {
		t.Fatal(err)
	}
	cc18 := newCoAPClient(context.Background(), nc18, nil)
	t.Cleanup(func() { _ = cc18.Close(); <-cc18.Done() })
	notes := make(chan note, 4)
	if _, err := cc18.Observe(ctx, "/obs", func(n *pool.Message) { notes <- noteOf(n) }); err != nil {
		t.Fatal(err)
	}
	if n := next(t, notes); string(n.body) != "v0" {
		t.Fatalf("observe sensor-18: %+v", n)
	}
	nc20, err := r.pair.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.20:5683"))
	if err != nil {
		t.Fatal(err)
	}
	cc20 := newCoAPClient(context.Background(), nc20, nil)
	t.Cleanup(func() { _ = cc20.Close(); <-cc20.Done() })
	queued := make(chan codes.Code, 1)
	go func() {
		resp, err := cc20.Get(ctx, "/temp")
		if err != nil {
			queued <- 0
			return
		}
		queued <- resp.Code()
	}()
	waitFor(t, func() bool { return r.px.Queued("sensor-20") == 1 })

	// The file as re-read: 18 and 20 gone, 19 re-keyed, 17 allowed to
	// reach central by Proxy-Uri, 21 new.
	var want []registry.Endpoint
	oldKey19 := keyOf("sensor-19")
	for _, ep := range r.reg.List() {
		switch ep.Name {
		case "sensor-18", "sensor-20":
			continue
		case "sensor-19":
			ep.PSK = []byte("a new key for sensor-19")
		case "sensor-17":
			ep.Allow = []string{"10.20.0.1:5683"}
		}
		want = append(want, ep)
	}
	want = append(want, registry.Endpoint{Name: "sensor-21", Protocol: registry.CoAP, PSKIdentity: "sensor-21", PSK: []byte("key-21")})
	res, err := r.px.Reconcile(want, r.srv.CloseSession)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 1 || len(res.Removed) != 2 || len(res.Rekeyed) != 1 || len(res.Reallowed) != 1 {
		t.Fatalf("reconcile: %+v", res)
	}
	if n := next(t, notes); n.code != codes.ServiceUnavailable || n.hasObs {
		t.Fatalf("central observer of the removed endpoint got %+v, want final 5.03", n)
	}
	if c := <-queued; c != codes.ServiceUnavailable {
		t.Fatalf("queued request of the removed endpoint: %v, want 5.03", c)
	}
	waitFor(t, func() bool { return r.srv.Session("sensor-18") == nil && r.srv.Session("sensor-19") == nil })
	if _, ok := r.reg.ByName("sensor-18"); ok {
		t.Fatal("sensor-18 still registered")
	}
	// The removed address no longer answers (nothing listens on it).
	gctx, gcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer gcancel()
	if _, err := cc18.Get(gctx, "/obs"); err == nil {
		t.Fatal("10.10.8.18 still answers after removal")
	}
	// sensor-19: the server now resolves its identity to the new key (a
	// wrong key failing the handshake is downlink/coap's TestRejects), and
	// a device with the new key is served.
	if k, _ := r.reg.PSK("sensor-19"); string(k) != "a new key for sensor-19" || string(k) == string(oldKey19) {
		t.Fatal("sensor-19 still has its old key")
	}
	if _, err := dial("sensor-19", []byte("a new key for sensor-19")); err != nil {
		t.Fatalf("new sensor-19 key: %v", err)
	}
	if _, err := dial("sensor-21", []byte("key-21")); err != nil {
		t.Fatalf("added sensor-21: %v", err)
	}
	// sensor-17's session was not touched and its new allow-list applies.
	if r.srv.Session("sensor-17") != s17 {
		t.Fatal("sensor-17's session was replaced by the reload")
	}
	if c := proxyGet(); c != codes.Content {
		t.Fatalf("Proxy-Uri after reload: %v, want 2.05", c)
	}
	resp, err := d17.Conn.Post(ctx, "/big", message.TextPlain, bytes.NewReader([]byte("still here")))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("sensor-17 after reload: %v %v", resp, err)
	}
	if got := r.px.Stats.Removed.Load(); got != 2 {
		t.Fatalf("Removed = %d, want 2", got)
	}
}
