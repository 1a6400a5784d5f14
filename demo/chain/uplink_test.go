package chain

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/daemon"
)

// TestUplinkCarriesEndpointTraffic: the demo's bridge (bridge/daemon.Site
// with the demo's configuration) brings its uplink up over real
// IKE/ESP/L2TP/PPP on loopback and a datagram from an endpoint address
// (10.10.8.5) reaches a central service in the gateway's stack, which
// answers it back to that address.
func TestUplinkCarriesEndpointTraffic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	g, err := startGateway(ctx, log, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := g.wait(20 * time.Second); err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	cfg, err := siteConfig(g, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	site, err := daemon.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = site.Close() })
	site.Start()
	if err := waitUp(ctx, site); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(site.Status().Uplink, "up") {
		t.Fatalf("status: got %q, want up", site.Status().Uplink)
	}
	ep := netip.MustParseAddr("10.10.8.5")
	if err := site.Stack().AddAddress(netip.PrefixFrom(ep, 32)); err != nil {
		t.Fatal(err)
	}
	srvAddr := netip.AddrPortFrom(netip.MustParseAddr(centralAddr), 7)
	pc, err := g.stack.ListenUDP(srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	c, err := site.Stack().DialUDP(netip.AddrPortFrom(ep, 40000), srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// The first datagram may race the gateway installing the site's framed
	// route right after IPCP opens: resend like a CoAP client would.
	buf := make([]byte, 100)
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err = c.Read(buf)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo from central within 10s: %v", err)
		}
	}
	if got, want := string(buf[:n]), "echo:hello"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
