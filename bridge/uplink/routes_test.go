package uplink

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/dhcpinform"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// routesClient starts a client with RequestRoutes against srv.
func routesClient(t *testing.T, srv *l2tpipsec.Server, clk clock.Clock, onRoutes func([]netip.Prefix)) *Client {
	t.Helper()
	c, err := New(Config{
		Gateways: []Gateway{{Addr: srv.IKEAddr().String(), NATTPort: srv.NATTAddr().Port()}},
		Tunnel: l2tpipsec.ClientConfig{
			LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
			PSK: []byte("uplink-psk"), Username: "site1", Password: "pw1",
			Clock: clock.System,
		},
		Clock:         clk,
		RequestRoutes: true,
		OnRoutes:      onRoutes,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPushedRoutes: after IPCP the client sends a DHCPINFORM over the PPP
// link; the gateway's responder (the same code the gateway runs) answers
// with the identity's routes, which land in Status and OnRoutes. DHCP
// replies never reach the packet handler; ordinary traffic still does; a
// malformed reply is counted, not fatal.
func TestPushedRoutes(t *testing.T) {
	stacktest.CheckGoroutines(t)
	push := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("10.30.1.0/24")}
	gw := netip.MustParseAddr("10.10.0.1")
	sessions := make(chan *l2tpipsec.ServerSession, 1)
	srv := startServer(t, netip.MustParseAddr("10.10.8.1"), sessions)
	routesCh := make(chan []netip.Prefix, 1)
	c := routesClient(t, srv, clock.System, func(r []netip.Prefix) { routesCh <- r })
	var toHandler, dhcpToHandler atomic.Int32
	c.SetPacketHandler(func(p []byte) {
		toHandler.Add(1)
		if dhcpinform.IsReply(p) {
			dhcpToHandler.Add(1)
		}
	})
	c.Start()
	t.Cleanup(func() { c.Close() })

	var ss *l2tpipsec.ServerSession
	select {
	case ss = <-sessions:
	case <-time.After(30 * time.Second):
		t.Fatalf("never up: %+v", c.Status())
	}
	informs := make(chan []byte, 8)
	var routes []dhcpinform.Route
	for _, p := range push {
		routes = append(routes, dhcpinform.Route{Prefix: p, Gateway: gw})
	}
	ss.SetPacketHandler(func(p []byte) {
		reply, ok, err := dhcpinform.Respond(p, dhcpinform.Reply{ServerID: gw, Routes: routes})
		if err != nil || !ok {
			return
		}
		informs <- slices.Clone(p)
		_ = ss.WritePacket(reply)
	})
	// The first INFORM may have gone out before the handler was set; the
	// client repeats it after 1 s.
	select {
	case got := <-routesCh:
		if !slices.Equal(got, push) {
			t.Fatalf("OnRoutes got %v, want %v", got, push)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no pushed routes: %+v", c.Status())
	}
	st := c.Status()
	if !st.RoutesKnown || !slices.Equal(st.Routes, push) {
		t.Fatalf("status routes %v known=%v", st.Routes, st.RoutesKnown)
	}
	in, err := dhcpinform.Parse(<-informs)
	if err != nil || in.CIAddr != netip.MustParseAddr("10.10.8.1") || in.Src != in.CIAddr {
		t.Fatalf("client's INFORM: %+v, %v", in, err)
	}

	// A malformed DHCP reply (valid IP/UDP 67→68, truncated BOOTP).
	bad := dhcpAck(t, gw, in)
	bad = bad[:28+40]
	bad[2], bad[3] = 0, byte(len(bad))
	bad[24], bad[25] = 0, 48
	fixIPChecksum(bad)
	before := toHandler.Load()
	if err := ss.WritePacket(bad); err != nil {
		t.Fatal(err)
	}
	if err := ss.WritePacket(pkttest.Tagged(gw, netip.MustParseAddr("10.10.8.1"), 1, 64)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for toHandler.Load() == before || c.Status().RouteErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("handler got %d, route errors %d", toHandler.Load()-before, c.Status().RouteErrors)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := dhcpToHandler.Load(); n != 0 {
		t.Fatalf("%d DHCP replies reached the packet handler", n)
	}
	if st := c.Status(); !slices.Equal(st.Routes, push) {
		t.Fatalf("a bad reply changed the routes: %v", st.Routes)
	}
}

// TestRoutesUnanswered: a stock LNS does not answer DHCPINFORM. The client
// tries exactly four times (now, +1 s, +2 s, +4 s on its clock), then gives
// up; the tunnel stays up and the routes stay unknown.
func TestRoutesUnanswered(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sessions := make(chan *l2tpipsec.ServerSession, 1)
	srv := startServer(t, netip.MustParseAddr("10.10.8.1"), sessions)
	clock := stacktest.NewClock()
	c := routesClient(t, srv, clock, nil)
	c.Start()
	t.Cleanup(func() { c.Close() })
	var ss *l2tpipsec.ServerSession
	select {
	case ss = <-sessions:
	case <-time.After(30 * time.Second):
		t.Fatalf("never up: %+v", c.Status())
	}
	// The client sends nothing else, so the session's inbound packet count
	// is the number of INFORMs that arrived (with or without a handler).
	informs := func() uint64 { n, _, _, _ := ss.Counters(); return n }
	waitFor := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for informs() < n {
			if time.Now().After(deadline) {
				ct := c.Tunnel().Stats()
				t.Fatalf("%d INFORMs, want %d; server ppp in=%d drop=%d early=%d esp=%+v; client ppp out=%d drop=%d", informs(), n,
					srv.Stats().PPP.PacketsIn.Load(), srv.Stats().PPP.PacketsDropped.Load(), srv.Stats().PPP.EarlyIPv4Queued.Load(), srv.Stats().ESP,
					ct.PPP.PacketsOut.Load(), ct.PPP.PacketsDropped.Load())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitFor(1)
	for i, step := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		for clock.Pending() == 0 { // the client's retry timer
			time.Sleep(time.Millisecond)
		}
		if got := informs(); got != uint64(i+1) {
			t.Fatalf("before try %d: %d INFORMs", i+2, got)
		}
		clock.Advance(step)
		waitFor(uint64(i + 2))
	}
	for clock.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	clock.Advance(8 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for c.inform.Load() != nil {
		if time.Now().After(deadline) {
			t.Fatal("client still waiting for a DHCPACK after its last try")
		}
		time.Sleep(time.Millisecond)
	}
	clock.Advance(time.Minute)
	time.Sleep(50 * time.Millisecond)
	if got := informs(); got != informTries {
		t.Fatalf("%d INFORMs, want %d", got, informTries)
	}
	if st := c.Status(); st.State != StateUp || st.RoutesKnown {
		t.Fatalf("status %+v", st)
	}
}

func dhcpAck(t *testing.T, gw netip.Addr, in *dhcpinform.Inform) []byte {
	t.Helper()
	b, err := dhcpinform.AppendAck(nil, in, dhcpinform.Reply{ServerID: gw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixIPChecksum(p []byte) {
	p[10], p[11] = 0, 0
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(p[i])<<8 | uint32(p[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	cs := ^uint16(s)
	p[10], p[11] = byte(cs>>8), byte(cs)
}
