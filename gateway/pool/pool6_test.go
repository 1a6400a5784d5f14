package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

// TestPool6: each identity gets a /64 of the pool, the same one on every
// allocation while it holds it (references counted across a relogin) and
// again after a release when still free; two identities never share one;
// the subnet-router /64 and reserved ones are never handed out; at most max
// are out at once (refusals counted), and a release frees room.
func TestPool6(t *testing.T) {
	p, err := New6(netip.MustParsePrefix("2001:db8:100::/60"), 8)
	if err != nil {
		t.Fatal(err)
	}
	static := netip.MustParsePrefix("2001:db8:100:3::/64")
	p.Reserve(static)
	a, err := p.Allocate("site-a")
	if err != nil || a.Bits() != 64 || !p.Prefix().Contains(a.Addr()) || a == static || a.Addr() == p.Prefix().Addr() {
		t.Fatalf("site-a: %v %v", a, err)
	}
	a2, _ := p.Allocate("site-a") // relogin overlap
	if a2 != a {
		t.Fatalf("relogin got %v, want %v", a2, a)
	}
	p.Release("site-a", a)
	if p.InUse() != 1 {
		t.Fatalf("in use %d after one of two releases, want 1", p.InUse())
	}
	p.Release("site-a", a)
	p.Release("site-a", a) // a late duplicate release is ignored
	if p.InUse() != 0 {
		t.Fatalf("in use %d, want 0", p.InUse())
	}
	if again, _ := p.Allocate("site-a"); again != a {
		t.Fatalf("reconnect got %v, want the same %v", again, a)
	}
	seen := map[netip.Prefix]string{a: "site-a"}
	for i := 0; i < 7; i++ {
		id := fmt.Sprintf("site-%d", i)
		pf, err := p.Allocate(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if o, dup := seen[pf]; dup || pf == static || pf.Addr() == p.Prefix().Addr() {
			t.Fatalf("%s got %v (held by %q, static %v)", id, pf, o, static)
		}
		seen[pf] = id
	}
	if _, err := p.Allocate("site-x"); !errors.Is(err, ErrExhausted) || p.Exhausted.Load() != 1 {
		t.Fatalf("9th identity: %v, exhausted %d", err, p.Exhausted.Load())
	}
	p.Release("site-3", netip.MustParsePrefix("2001:db8:100:ff::/64")) // not site-3's: ignored
	if p.InUse() != 8 {
		t.Fatalf("a foreign release freed a /64")
	}
	for pf, id := range seen {
		if id == "site-3" {
			p.Release(id, pf)
		}
	}
	if _, err := p.Allocate("site-x"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// A /63 pool has one usable /64 (offset 0 is the subnet-router anycast).
	small, _ := New6(netip.MustParsePrefix("2001:db8::/63"), 0)
	if small.Max() != 1 {
		t.Fatalf("/63 max %d, want 1", small.Max())
	}
	for _, bad := range []string{"10.0.0.0/8", "2001:db8::/64", "2001::/16", "::ffff:0:0/96"} {
		if _, err := New6(netip.MustParsePrefix(bad), 0); err == nil {
			t.Errorf("New6(%s) accepted", bad)
		}
	}
}
