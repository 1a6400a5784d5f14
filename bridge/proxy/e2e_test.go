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
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// centralAt runs a CoAP server on the central stack at the given address,
// answering every request with 2.05 "src=<source address>".
func centralAt(t *testing.T, pair *ipstacktest.Pair, at string) {
	t.Helper()
	pc, err := pair.B.ListenUDP(netip.MustParseAddrPort(at))
	if err != nil {
		t.Fatal(err)
	}
	coaptest.Serve(t, pc, coaptest.SourceEcho)
}

func TestEndToEnd(t *testing.T) {
	pair := ipstacktest.NewPair(t, 0)
	if err := pair.B.AddAddress(netip.MustParsePrefix("10.20.0.1/32")); err != nil {
		t.Fatal(err)
	}
	centralAt(t, pair, "10.20.0.1:5683")
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	prov, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"})
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(Config{Stack: pair.A, Registry: reg, Central: netip.MustParseAddrPort("10.20.0.1:5683"), QueueTTL: 30 * time.Second, RequestTimeout: 5 * time.Second})
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
	t.Cleanup(func() { srv.Close(); srv.Wait(); px.Close() })

	// Central → a sleeping device: queued, then 5.04 on expiry.
	nc, err := pair.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.17:5683"))
	if err != nil {
		t.Fatal(err)
	}
	cc := newCoAPClient(context.Background(), nc, nil)
	t.Cleanup(func() { _ = cc.Close() })
	type result struct {
		code codes.Code
		body string
		err  error
	}
	get := func(path string) chan result {
		ch := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			resp, err := cc.Get(ctx, path)
			if err != nil {
				ch <- result{err: err}
				return
			}
			b, _ := resp.ReadBody()
			ch <- result{code: resp.Code(), body: string(b)}
		}()
		return ch
	}
	expired := get("/expire")
	waitFor(t, func() bool { return px.Queued("sensor-17") == 1 })
	px.Tick(time.Now().Add(time.Minute))
	if r := <-expired; r.err != nil || r.code != codes.GatewayTimeout {
		t.Fatalf("expired queued request: got %v %v, want 5.04", r.code, r.err)
	}
	queued := get("/temp")
	waitFor(t, func() bool { return px.Queued("sensor-17") == 1 })

	// The device wakes up: device → central sourced from 10.10.8.17, and
	// the queued central request is delivered.
	d, err := coaptest.Dial(t, srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: prov.Endpoint.PSK,
		Handler: func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
			p, _ := r.Path()
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("device"+p)))
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := d.Conn.Post(ctx, "/data", message.TextPlain, bytes.NewReader([]byte("21.5")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := resp.ReadBody()
	if got, want := string(b), "src=10.10.8.17:"; resp.Code() != codes.Content || len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("device → central: got %v %q, want 2.05 %q…", resp.Code(), got, want)
	}
	if r := <-queued; r.err != nil || r.code != codes.Content || r.body != "device/temp" {
		t.Fatalf("queued central → device: got %v %q %v, want 2.05 device/temp", r.code, r.body, r.err)
	}
	if r := <-get("/live"); r.err != nil || r.body != "device/live" {
		t.Fatalf("central → awake device: got %q %v, want device/live", r.body, r.err)
	}
	if px.Stats.Expired.Load() != 1 || px.Stats.Queued.Load() != 2 || px.Stats.Upstream.Load() != 1 {
		t.Fatalf("got Expired=%d Queued=%d Upstream=%d, want 1 2 1", px.Stats.Expired.Load(), px.Stats.Queued.Load(), px.Stats.Upstream.Load())
	}
}

// waitFor polls a condition set by another goroutine (the proxy has no
// event to wait on for "queued").
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
