package server

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestSessionIPv6PrefixInBird: with bgp.next_hop6 the sites' IPv6 prefixes
// are announced like their IPv4 framed routes, as IPv6 unicast over the
// same (IPv4) session to a real bird2: a static identity's ipv6_prefix and
// a prefix the configuration does not know (RADIUS Delegated-IPv6-Prefix)
// reach bird's table via 2001:db8:1::1 when their sessions register and
// leave it when they end, while the IPv4 /32 of the same session is
// announced and withdrawn beside them.
func TestSessionIPv6PrefixInBird(t *testing.T) {
	hosts, child := netns.InHost(t, "a", func() *netns.Topology {
		topo := netns.Pair(t)
		topo.AddAddr("a", "b", "2001:db8:1::1/64")
		topo.AddAddr("b", "a", "2001:db8:1::2/64")
		return topo
	})
	if !child {
		return
	}
	bird := realpeer.StartBird(t, hosts["b"], realpeer.BirdConfig{RouterID: "192.0.2.2", AS: 65000, IPv6: true,
		Neighbors: []realpeer.BirdNeighbor{{Name: "peer_gw", Addr: "192.0.2.1", AS: 65010, HoldTime: 9}}})
	cfg := parse(t, filepath.Join(t.TempDir(), "gw.sock"), "  - {name: site6, ppp: {password: p}, ipv6_prefix: \"2001:db8:8::/64\"}\n"+
		"bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  next_hop6: 2001:db8:1::1\n  neighbors:\n    - {address: 192.0.2.2, as: 65000, hold_time: 9s, connect_retry: 1s}\n")
	envc := make(chan *Env, 1)
	srv, err := New(cfg, Options{Engine: EngineFunc(func(ctx context.Context, env *Env) error {
		envc <- env
		<-ctx.Done()
		return nil
	}), Host: newNullHost(), Clock: stacktest.NewClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	env := <-envc

	const via4, via6 = "192.0.2.1", "2001:db8:1::1"
	static := &testSession6{testSession: newTestSession("site6", "10.10.0.6"), pfx: netip.MustParsePrefix("2001:db8:8::/64")}
	delegated := &testSession6{testSession: newTestSession("r6d", "10.10.0.9"), pfx: netip.MustParsePrefix("2001:db8:77::/56")}
	start := time.Now()
	for _, s := range []*testSession6{static, delegated} {
		if err := env.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range [][2]string{{"2001:db8:8::/64", via6}, {"2001:db8:77::/56", via6}, {"10.10.0.6/32", via4}} {
		if !bird.WaitRoute(r[0], r[1], true, 20*time.Second) {
			proto, _ := bird.Command("show protocols all peer_gw")
			t.Fatalf("bird lacks %s via %s:\n%s\n%s", r[0], r[1], bird.Routes(), proto)
		}
	}
	t.Logf("sessions up → bird has both IPv6 prefixes via %s after %v", via6, time.Since(start).Round(time.Millisecond))
	env.Unregister(delegated, radius.CauseUserRequest)
	if !bird.WaitRoute("2001:db8:77::/56", via6, false, 20*time.Second) {
		t.Fatalf("2001:db8:77::/56 still in bird after its session ended:\n%s", bird.Routes())
	}
	if !bird.HasRoute("2001:db8:8::/64", via6) {
		t.Fatalf("the other session's IPv6 prefix went too:\n%s", bird.Routes())
	}
	env.Unregister(static, radius.CauseUserRequest)
	if !bird.WaitRoute("2001:db8:8::/64", via6, false, 20*time.Second) || !bird.WaitRoute("10.10.0.6/32", via4, false, 20*time.Second) {
		t.Fatalf("site6's prefixes still in bird after its session ended:\n%s", bird.Routes())
	}
}
