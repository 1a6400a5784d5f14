package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

type testSession6 struct {
	*testSession
	pfx netip.Prefix
}

func (s *testSession6) IPv6Prefix() netip.Prefix { return s.pfx }

// TestTUNIPv6RoutesFollowReload: in TUN mode the kernel's IPv6 routes into
// the TUN follow the configuration: a reload that removes an identity's
// ipv6_prefix, adds another's and sets pool.ipv6_prefix removes and adds
// those routes; an IPv6 prefix the configuration does not route (RADIUS
// Delegated-IPv6-Prefix) is routed while its session is registered.
func TestTUNIPv6RoutesFollowReload(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	h := netns.One(t)
	ctx := context.Background()
	parse := func(y string) *config.Config {
		c, err := config.Parse("gw.yaml", []byte("psk: {shared: x}\nmetrics: {listen: \"off\"}\n"+y))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cfg := parse("identities:\n  - {name: site8, ppp: {password: p}, ipv6_prefix: \"2001:db8:8::/64\"}\n")
	var tun *dataplane.TUN
	if err := h.Do(func() (err error) {
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: h.NS,
			Routes: append([]netip.Prefix{cfg.Pool.PrefixP}, hostRoutes6(cfg)...)})
		return err
	}); err != nil {
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
	t.Cleanup(func() { cancel(); <-done })
	env := <-ready
	routes := func() string {
		out, _ := h.Run(ctx, "ip", "-6", "route", "show", "dev", "fg0")
		return out
	}
	check := func(when string, want, gone []string) {
		t.Helper()
		r := routes()
		for _, w := range want {
			if !strings.Contains(r, w) {
				t.Errorf("%s: route %s missing:\n%s", when, w, r)
			}
		}
		for _, g := range gone {
			if strings.Contains(r, g) {
				t.Errorf("%s: route %s still there:\n%s", when, g, r)
			}
		}
	}
	check("start", []string{"2001:db8:8::/64"}, nil)
	if _, err := srv.Reload(parse("pool: {ipv6_prefix: \"2001:db8:100::/48\"}\nidentities:\n  - {name: site9, ppp: {password: p}, ipv6_prefix: \"2001:db8:9::/64\"}\n")); err != nil {
		t.Fatal(err)
	}
	check("after the reload", []string{"2001:db8:9::/64", "2001:db8:100::/48"}, []string{"2001:db8:8::/64"})
	sess := &testSession6{testSession: newTestSession("r6d", "10.10.0.9"), pfx: netip.MustParsePrefix("2001:db8:77::/56")}
	if err := env.Register(sess); err != nil {
		t.Fatal(err)
	}
	check("RADIUS session up", []string{"2001:db8:77::/56"}, nil)
	env.Unregister(sess, 0)
	check("RADIUS session gone", []string{"2001:db8:9::/64", "2001:db8:100::/48"}, []string{"2001:db8:77::/56"})
}
