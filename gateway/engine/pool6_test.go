package engine_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestPool6Sessions: with pool.ipv6_prefix (a /62: three usable /64s,
// ipv6_max 2) identities without a static ipv6_prefix are offered IPV6CP
// and get distinct /64s, routed to their sessions; a third gets none
// (IPV6CP refused, the link stays up on IPv4, counted); a /64 goes back
// when its session ends, and the identity gets the same one on reconnect.
func TestPool6Sessions(t *testing.T) {
	cfg := parseConfigPool(t, "10.10.0.0/24, ipv6_prefix: \"2001:db8:100::/62\", ipv6_max: 2",
		"  - {name: hall8, ppp: {password: pw8}}\n  - {name: hall9, ppp: {password: pw9}}\n")
	g := startGateway(t, cfg, engine.Config{})
	pool := netip.MustParsePrefix("2001:db8:100::/62")
	up := func(user, pw string) (*l2tpipsec.Tunnel, netip.Prefix) {
		t.Helper()
		cc := g.clientConfig(user, pw)
		cc.IPv6 = true
		tn, _ := dialNoClose(t, cc)
		t.Cleanup(func() { _ = tn.Close() })
		waitFor(t, user+" registered", func() bool { return g.srv.Env().Sessions.Lookup(tn.LocalAddr()) != nil })
		s6, _ := g.srv.Env().Sessions.Lookup(tn.LocalAddr()).(route.IPv6Session)
		return tn, s6.IPv6Prefix()
	}
	ipv6Up := func(tn *l2tpipsec.Tunnel, who string) {
		t.Helper()
		select {
		case <-tn.IPv6Up():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: IPV6CP not up: %+v", who, tn.Info())
		}
	}
	tn7, p7 := up("hall7", "pw7")
	ipv6Up(tn7, "hall7")
	tn8, p8 := up("hall8", "pw8")
	ipv6Up(tn8, "hall8")
	if p7.Bits() != 64 || p8.Bits() != 64 || !pool.Contains(p7.Addr()) || !pool.Contains(p8.Addr()) || p7 == p8 || p7.Addr() == pool.Addr() {
		t.Fatalf("hall7 %v, hall8 %v: want two distinct /64s of %v (not its first)", p7, p8, pool)
	}
	if s := g.srv.Env().Sessions.Lookup(p8.Addr().Next()); s == nil || s.Identity() != "hall8" {
		t.Fatalf("%v not routed to hall8's session", p8)
	}
	tn9, p9 := up("hall9", "pw9")
	waitFor(t, "hall9's IPV6CP refused", func() bool { return tn9.Stats().PPP.IPV6CPRejected.Load() == 1 })
	rep := g.srv.Report().Pool
	if p9.IsValid() || rep == nil || rep.IPv6InUse != 2 || rep.IPv6Max != 2 || rep.IPv6Exhausted != 1 || rep.IPv6Prefix != pool.String() {
		t.Fatalf("hall9 got %v; status pool %+v: want 2 of 2 /64s in use, 1 exhausted", p9, rep)
	}
	select {
	case <-tn9.Done():
		t.Fatalf("hall9's link ended: %v", tn9.Err())
	default:
	}
	_ = tn7.Close()
	waitFor(t, "hall7's /64 back in the pool", func() bool { return g.srv.Report().Pool.IPv6InUse == 1 })
	tn7, again := up("hall7", "pw7")
	ipv6Up(tn7, "hall7 again")
	if again != p7 {
		t.Fatalf("hall7 reconnected with %v, had %v", again, p7)
	}
	for _, e := range g.srv.Report().Sessions {
		if e.Identity == "hall7" && e.IPv6Prefix != p7.String() {
			t.Fatalf("status shows hall7 with %q, want %v", e.IPv6Prefix, p7)
		}
	}
}
