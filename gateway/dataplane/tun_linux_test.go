package dataplane

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestTUNRoundTrip puts the router's TUN in a fresh namespace with a
// "central" service on 10.20.0.10 and moves UDP both ways between it and a
// session whose framed route is 10.10.8.0/24.
func TestTUNRoundTrip(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	h := netns.One(t)
	ns := h.NS
	if out, err := h.Run(context.Background(), "ip", "addr", "add", "10.20.0.10/32", "dev", "lo"); err != nil {
		t.Fatalf("ip addr add: %v %s", err, out)
	}
	sess := &notifySession{fakeSession: &fakeSession{id: 1, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"),
		routes: []netip.Prefix{netip.MustParsePrefix("10.10.8.0/24")}, mtu: 1400}, ch: make(chan []byte, 8)}
	r := newRouterFor(t, sess)
	var tun *TUN
	var svc *net.UDPConn
	err := h.Do(func() (err error) {
		tun, err = OpenTUN(TUNConfig{Name: "fg0", LocalAddr: netip.MustParseAddr("10.10.0.1"), NetNS: ns,
			Routes: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("10.10.8.0/24")}})
		if err != nil {
			return err
		}
		svc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.20.0.10:9000")))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.SetHost(tun)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = r.RunHost(ctx) }()
	t.Cleanup(func() {
		cancel()
		svc.Close()
		tun.Close()
		wg.Wait()
	})

	// Session -> kernel: a sensor behind the site sends to the service.
	if err := r.FromSession(sess, udpPacket(netip.MustParseAddrPort("10.10.8.17:5683"), netip.MustParseAddrPort("10.20.0.10:9000"), []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, from, err := svc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("service did not get the packet: %v", err)
	}
	if string(buf[:n]) != "hello" || from != netip.MustParseAddrPort("10.10.8.17:5683") {
		t.Errorf("service got %q from %v, want \"hello\" from 10.10.8.17:5683", buf[:n], from)
	}
	// Kernel -> session: the service answers; the kernel routes it into
	// fg0 and the router hands it to the session owning 10.10.8.0/24.
	if _, err := svc.WriteToUDPAddrPort([]byte("world"), from); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-sess.ch:
		h := ipv4.Header(p)
		if h.Dst() != netip.MustParseAddr("10.10.8.17") || string(h.Payload()[8:]) != "world" {
			t.Errorf("session got %v -> %v %q", h.Src(), h.Dst(), h.Payload()[8:])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session got nothing from the TUN")
	}
	if got := r.Stats.ToHostPackets.Load(); got != 1 {
		t.Errorf("ToHostPackets: got %d, want 1", got)
	}
}
