package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestTUNRoundTrip puts the router's TUN in a fresh namespace with a
// "central" service on 10.20.0.10 and moves UDP both ways between it and a
// session whose framed route is 10.10.8.0/24, with each driver.
func TestTUNRoundTrip(t *testing.T) {
	for _, d := range []string{TUNDriverVnet, TUNDriverWater} {
		t.Run(d, func(t *testing.T) { testTUNRoundTrip(t, d) })
	}
}

func testTUNRoundTrip(t *testing.T, driver string) {
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
		tun, err = OpenTUN(TUNConfig{Name: "fg0", LocalAddr: netip.MustParseAddr("10.10.0.1"), NetNS: ns, Driver: driver,
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
	if err := r.FromSession(sess, pkttest.UDP(netip.MustParseAddrPort("10.10.8.17:5683"), netip.MustParseAddrPort("10.20.0.10:9000"), []byte("hello"))); err != nil {
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
		h := header.IPv4(p)
		if dst4(h) != netip.MustParseAddr("10.10.8.17") || string(h.Payload()[8:]) != "world" {
			t.Errorf("session got %v -> %v %q", src4(h), dst4(h), h.Payload()[8:])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session got nothing from the TUN")
	}
	if got := r.Stats.ToHostPackets.Load(); got != 1 {
		t.Errorf("ToHostPackets: got %d, want 1", got)
	}
}

// TestTUNOpenErrors: a TUN that cannot be opened, or whose kernel refuses
// IFF_VNET_HDR offloads, gives one error naming the device, the cause and
// (for the offloads) the config key that selects the fallback driver; a
// route netlink refuses names the route and the device.
func TestTUNOpenErrors(t *testing.T) {
	testenv.RequireRoot(t)
	h := netns.One(t)
	open := func(cfg TUNConfig) (tun *TUN, err error) {
		err = h.Do(func() error {
			var e error
			tun, e = OpenTUN(cfg)
			return e
		})
		return tun, err
	}
	cfg := TUNConfig{Name: "fg9", LocalAddr: netip.MustParseAddr("10.10.0.1")}

	old := tunClonePath
	tunClonePath = "/nonexistent/tun"
	_, err := open(cfg)
	tunClonePath = old
	if err == nil || !strings.Contains(err.Error(), `TUN "fg9"`) || !strings.Contains(err.Error(), "/nonexistent/tun") || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("no clone device: %v, want the device, the path and CAP_NET_ADMIN named", err)
	}

	oldCreate := createVnet
	createVnet = func(int) (wgtun.Device, string, error) { return nil, "", unix.EINVAL }
	_, err = open(cfg)
	createVnet = oldCreate
	if !errors.Is(err, ErrNoVnetHdr) || !strings.Contains(err.Error(), "dataplane.tun_driver: water") || !strings.Contains(err.Error(), `TUN "fg9"`) {
		t.Errorf("offloads refused: %v, want ErrNoVnetHdr naming fg9 and dataplane.tun_driver: water", err)
	}

	if _, err := open(TUNConfig{Name: "fg9", Driver: "tap"}); err == nil || !strings.Contains(err.Error(), "dataplane.tun_driver") {
		t.Errorf("unknown driver: %v, want the config key named", err)
	}

	tun, err := open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if tun.Driver() != TUNDriverVnet {
		t.Errorf("default driver %q, want %q", tun.Driver(), TUNDriverVnet)
	}
	err = tun.DelRoute(netip.MustParsePrefix("10.99.0.0/16"))
	if err == nil || !strings.Contains(err.Error(), "10.99.0.0/16") || !strings.Contains(err.Error(), "fg9") {
		t.Errorf("deleting a missing route: %v, want the route and the device named", err)
	}
}
