package server

import (
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/status"
)

// TestPool6StatusAndMetrics: the /64 pool's use shows in metrics
// (fleetgate_pool6_*), in the status report's pool line beside the IPv4
// pool, and a session's IPv6 prefix in the sessions view; the static
// identity keeps its own prefix, RADIUS's prefix is taken as given, a full
// pool leaves a site IPv4 only and is counted.
func TestPool6StatusAndMetrics(t *testing.T) {
	cfg, err := config.Parse("gw.yaml", []byte("psk: {shared: x}\nmetrics: {listen: \"off\"}\npool: {prefix: 10.10.0.0/24, ipv6_prefix: \"2001:db8:100::/62\", ipv6_max: 1}\n"+
		"identities:\n  - {name: site8, ppp: {password: p}, ipv6_prefix: \"2001:db8:8::/64\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost()})
	if err != nil {
		t.Fatal(err)
	}
	env := srv.Env()
	static, _ := env.AssignIPv6("site8", netip.Prefix{})
	radius, _ := env.AssignIPv6("r6d", netip.MustParsePrefix("2001:db8:77::/56"))
	dyn, err := env.AssignIPv6("a", netip.Prefix{})
	if static != netip.MustParsePrefix("2001:db8:8::/64") || radius != netip.MustParsePrefix("2001:db8:77::/56") || err != nil || dyn.Bits() != 64 {
		t.Fatalf("static %v, radius %v, pool %v (%v)", static, radius, dyn, err)
	}
	if none, err := env.AssignIPv6("b", netip.Prefix{}); err == nil || none.IsValid() {
		t.Fatalf("beyond ipv6_max: %v %v", none, err)
	}
	s := &testSession6{testSession: newTestSession("a", "10.10.0.9"), pfx: dyn}
	if err := env.Register(s); err != nil {
		t.Fatal(err)
	}
	if v := srv.SessionsView(); len(v.Sessions) != 1 || v.Sessions[0].IPv6Prefix != dyn.String() {
		t.Fatalf("sessions view: %+v", v.Sessions)
	}
	if p := srv.Report().Pool; p == nil || *p != (status.Pool{Prefix: "10.10.0.0/24", InUse: 0, Free: 253, IPv6Prefix: "2001:db8:100::/62", IPv6InUse: 1, IPv6Max: 1, IPv6Exhausted: 1}) {
		t.Fatalf("status pool: %+v", p)
	}
	mfs, err := srv.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"fleetgate_pool6_prefixes_in_use": 1, "fleetgate_pool6_prefixes_max": 1, "fleetgate_pool6_exhausted_total": 1}
	for _, mf := range mfs {
		if v, ok := want[mf.GetName()]; ok {
			m := mf.GetMetric()[0]
			if got := m.GetGauge().GetValue() + m.GetCounter().GetValue(); got != v {
				t.Errorf("%s = %v, want %v", mf.GetName(), got, v)
			}
			delete(want, mf.GetName())
		}
	}
	if len(want) > 0 {
		t.Errorf("metrics missing: %v", want)
	}
	env.Unregister(s, 0)
	if p := srv.Report().Pool; p.IPv6InUse != 0 {
		t.Fatalf("after the session ended: %d /64s in use", p.IPv6InUse)
	}
}
