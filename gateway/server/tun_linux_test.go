package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// echoSession answers ICMP echo requests like a site would: the reply goes
// back through the router as if it came out of the tunnel.
type echoSession struct {
	*testSession
	env *Env
}

func (e *echoSession) WritePacket(p []byte) error {
	h := header.IPv4(p)
	if !h.IsValid(len(p)) || h.TransportProtocol() != header.ICMPv4ProtocolNumber || len(h.Payload()) < 8 || h.Payload()[0] != 8 {
		return e.testSession.WritePacket(p)
	}
	r := append([]byte(nil), p[:h.TotalLength()]...)
	rh := header.IPv4(r)
	rh.SetSourceAddress(h.DestinationAddress())
	rh.SetDestinationAddress(h.SourceAddress())
	rh.SetTTL(64)
	rh.SetChecksum(0)
	rh.SetChecksum(^rh.CalculateChecksum())
	icmp := header.ICMPv4(rh.Payload())
	icmp.SetType(header.ICMPv4EchoReply)
	icmp.SetChecksum(0)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	go func() { _ = e.env.Router.FromSession(e, r) }() // not re-entrant on the host reader
	return nil
}

// TestTUNPingAndDynamicRoutes runs the server on a TUN in a fresh
// namespace ("central"): the kernel there pings a site's VPN address and an
// endpoint inside its framed route (answered by the fake site), and a
// RADIUS-style framed route not in the configuration is installed on
// Register and removed on Unregister.
func TestTUNPingAndDynamicRoutes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	h := netns.One(t)
	ns := h.NS
	ctx := context.Background()
	cfg, err := config.Parse("gw.yaml", []byte("psk: {shared: x}\nmetrics: {listen: \"off\"}\npolicy: {default: deny}\n"+
		"identities:\n  - {name: hall7, ppp: {password: p}, address: 10.10.0.7, routes: [10.10.8.0/24]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var tun *dataplane.TUN
	err = h.Do(func() (err error) {
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: ns,
			Routes: []netip.Prefix{cfg.Pool.PrefixP, netip.MustParsePrefix("10.10.8.0/24")}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *Env, 1)
	srv, err := New(cfg, Options{Host: tun, Engine: EngineFunc(func(ctx context.Context, env *Env) error {
		ready <- env
		<-ctx.Done()
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	env := <-ready
	sess := &echoSession{testSession: newTestSession("hall7", "10.10.0.7", "10.10.8.0/24", "10.77.0.0/24"), env: env}
	if err := env.Register(sess); err != nil {
		t.Fatal(err)
	}
	routes, _ := h.Run(ctx, "ip", "route", "show", "dev", "fg0")
	if !strings.Contains(routes, "10.77.0.0/24") {
		t.Errorf("dynamic framed route not installed:\n%s", routes)
	}
	for _, dst := range []string{"10.10.0.7", "10.10.8.17", "10.77.0.5"} {
		if n, err := h.Ping(netip.MustParseAddr(dst), 3, 3*time.Second); err != nil || n != 3 {
			t.Errorf("ping %s from the central namespace: %d of 3 replies, %v", dst, n, err)
		}
	}
	// Default-deny policy: the site itself may not open anything, yet the
	// echo replies passed as replies to central's requests.
	if got := env.Router.Stats.Drops(dataplane.ReasonPolicy); got != 0 {
		t.Errorf("policy drops: got %d, want 0", got)
	}
	env.Unregister(sess, 0)
	routes, _ = h.Run(ctx, "ip", "route", "show", "dev", "fg0")
	if strings.Contains(routes, "10.77.0.0/24") || !strings.Contains(routes, "10.10.8.0/24") {
		t.Errorf("after Unregister: want 10.77.0.0/24 gone and configured 10.10.8.0/24 kept:\n%s", routes)
	}
}
