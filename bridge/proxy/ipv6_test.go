package proxy

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
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

// With an IPv6 site prefix, central reaches a CoAP endpoint at its IPv6
// address (sensor-17 → 2001:db8:8::17) and gets the device's answer from
// that address; the device's upstream CoAP to an IPv6 central leaves from
// the endpoint's IPv6 address; the IPv4 address keeps working beside it.
func TestEndToEndIPv6(t *testing.T) {
	pair := ipstacktest.NewPair(t, 0)
	for _, a := range []string{"2001:db8:200::10/128", "10.20.0.1/32"} {
		if err := pair.B.AddAddress(netip.MustParsePrefix(a)); err != nil {
			t.Fatal(err)
		}
	}
	centralAt(t, pair, "[2001:db8:200::10]:5683")
	reg, _ := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
	if err := reg.SetIPv6Prefix(netip.MustParsePrefix("2001:db8:8::/64")); err != nil {
		t.Fatal(err)
	}
	prov, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("2001:db8:8::17"); prov.Endpoint.Addr6 != want {
		t.Fatalf("endpoint IPv6 address %s, want %s", prov.Endpoint.Addr6, want)
	}
	px, err := New(Config{Stack: pair.A, Registry: reg, Central: netip.MustParseAddrPort("[2001:db8:200::10]:5683"), QueueTTL: 30 * time.Second, RequestTimeout: 5 * time.Second})
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

	// The sensor side (site LAN) is IPv4 here; the LAN over IPv6 is tested
	// in bridge/daemon.
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
	if got, want := string(b), "src=[2001:db8:8::17]:"; resp.Code() != codes.Content || !strings.HasPrefix(got, want) {
		t.Fatalf("device → central over IPv6: got %v %q, want 2.05 %q…", resp.Code(), got, want)
	}

	for _, c := range []struct{ from, to string }{
		{"[2001:db8:200::10]:0", "[2001:db8:8::17]:5683"},
		{"10.20.0.1:0", "10.10.8.17:5683"},
	} {
		nc, err := pair.B.DialUDP(netip.MustParseAddrPort(c.from), netip.MustParseAddrPort(c.to))
		if err != nil {
			t.Fatal(err)
		}
		cc := newCoAPClient(context.Background(), nc, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cc.Get(ctx, "/live")
		cancel()
		if err != nil {
			t.Fatalf("central %s → %s: %v", c.from, c.to, err)
		}
		b, _ := resp.ReadBody()
		_ = cc.Close()
		if string(b) != "device/live" {
			t.Fatalf("central → %s: got %q, want device/live", c.to, b)
		}
	}
	if got := px.Stats.Demuxed.Load(); got < 2 {
		t.Fatalf("Demuxed=%d, want at least 2 (one per family)", got)
	}
}
