package engine_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestRADIUSIPv6Prefixes: users only a real FreeRADIUS knows log in through
// the whole stack asking for IPv6. Its Access-Accept's
// Delegated-IPv6-Prefix (RFC 4818) becomes the site prefix (preferred to a
// Framed-IPv6-Prefix in the same reply), a Framed-IPv6-Prefix alone (RFC
// 3162) likewise; a reply without one, or with an unusable one (a /32:
// ignored and counted as a bad reply), gets a /64 of pool.ipv6_prefix.
// Each is routed to its session and IPV6CP opens.
func TestRADIUSIPv6Prefixes(t *testing.T) {
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{
		{Name: "r6d", Password: "pw", Reply: []string{"Delegated-IPv6-Prefix = 2001:db8:77::/56", "Framed-IPv6-Prefix = 2001:db8:78::/64"}},
		{Name: "r6f", Password: "pw", Reply: []string{"Framed-IPv6-Prefix = 2001:db8:79::/64"}},
		{Name: "r6p", Password: "pw"},
		{Name: "r6bad", Password: "pw", Reply: []string{"Framed-IPv6-Prefix = 2001:db9::/32"}},
	}})
	cfg := parseConfigPool(t, "10.10.0.0/24, ipv6_prefix: \"2001:db8:100::/48\"",
		fmt.Sprintf("radius: {auth: %q, acct: %q, secret: %q}\n", fr.Auth, fr.Acct, fr.Secret))
	g := startGateway(t, cfg, engine.Config{})
	pool := netip.MustParsePrefix("2001:db8:100::/48")
	for _, tc := range []struct {
		user string
		want netip.Prefix // invalid: a /64 of the pool
	}{
		{"r6d", netip.MustParsePrefix("2001:db8:77::/56")},
		{"r6f", netip.MustParsePrefix("2001:db8:79::/64")},
		{"r6p", netip.Prefix{}},
		{"r6bad", netip.Prefix{}},
	} {
		cc := g.clientConfig(tc.user, "pw")
		cc.IPv6 = true
		tn, _ := dial(t, cc)
		select {
		case <-tn.IPv6Up():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: IPV6CP not up: %+v", tc.user, tn.Info())
		}
		waitFor(t, tc.user+" registered", func() bool { return g.srv.Env().Sessions.ByIdentity(tc.user) != nil })
		sess := g.srv.Env().Sessions.ByIdentity(tc.user)
		got := sess.(route.IPv6Session).IPv6Prefix()
		if tc.want.IsValid() && got != tc.want || !tc.want.IsValid() && (got.Bits() != 64 || !pool.Contains(got.Addr())) {
			t.Fatalf("%s: site prefix %v, want %v (invalid: a /64 of %v)", tc.user, got, tc.want, pool)
		}
		if r := g.srv.Env().Sessions.Lookup(got.Addr().Next()); r != sess {
			t.Fatalf("%s: %v not routed to its session", tc.user, got)
		}
		t.Logf("%s: %v", tc.user, got)
	}
	if n := g.srv.Env().RADIUS.Stats.BadReplies.Load(); n != 1 {
		t.Fatalf("bad replies %d, want 1 (r6bad's /32)", n)
	}
	if rep := g.srv.Report().Pool; rep.IPv6InUse != 2 {
		t.Fatalf("pool /64s in use %d, want 2 (r6p, r6bad)", rep.IPv6InUse)
	}
}
