package pool

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAllocateStickyReserveExhaust(t *testing.T) {
	p, err := New(netip.MustParsePrefix("10.10.0.0/29"), netip.MustParseAddr("10.10.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	// /29: hosts .1-.6, .1 is the gateway, reserve .3 as static.
	p.Reserve(netip.MustParseAddr("10.10.0.3"))
	p.Reserve(netip.MustParseAddr("192.0.2.1")) // outside: ignored
	if got, want := p.Free(), 4; got != want {
		t.Fatalf("free: got %d, want %d", got, want)
	}
	var got []string
	for _, id := range []string{"a", "b", "c", "d"} {
		a, err := p.Allocate(id)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if want := "10.10.0.2,10.10.0.4,10.10.0.5,10.10.0.6"; join(got) != want {
		t.Errorf("allocations: got %s, want %s", join(got), want)
	}
	if _, err := p.Allocate("e"); !errors.Is(err, ErrExhausted) {
		t.Errorf("fifth allocation: got %v, want ErrExhausted", err)
	}
	p.Release(netip.MustParseAddr("10.10.0.4"))
	p.Release(netip.MustParseAddr("10.10.0.3")) // reserved: ignored
	if a, _ := p.Allocate("b"); a != netip.MustParseAddr("10.10.0.4") {
		t.Errorf("sticky re-allocation for b: got %v, want 10.10.0.4", a)
	}
	p.Release(netip.MustParseAddr("10.10.0.5"))
	if err := p.Claim("radius-user", netip.MustParseAddr("10.10.0.5")); err != nil {
		t.Errorf("claim free address: %v", err)
	}
	if err := p.Claim("x", netip.MustParseAddr("10.10.0.6")); !errors.Is(err, ErrInUse) {
		t.Errorf("claim used address: got %v, want ErrInUse", err)
	}
	if got := p.InUse(); got != 4 {
		t.Errorf("in use: got %d, want 4", got)
	}
}

// TestReloginOverlap: a relogin that overlaps the session it replaces gets
// the same address; it is freed only when both have released it.
func TestReloginOverlap(t *testing.T) {
	p, _ := New(netip.MustParsePrefix("10.10.0.0/24"), netip.MustParseAddr("10.10.0.1"))
	a1, _ := p.Allocate("hall7")
	a2, _ := p.Allocate("hall7")
	if a1 != a2 {
		t.Fatalf("relogin got %v, want the same %v", a2, a1)
	}
	if b, _ := p.Allocate("pump2"); b == a1 {
		t.Fatal("another identity got a held address")
	}
	p.Release(a1) // the replaced session ends
	if c, _ := p.Allocate("other"); c == a1 {
		t.Fatal("address freed while the new session still holds it")
	}
	p.Release(a2)
	if got := p.InUse(); got != 2 {
		t.Errorf("in use: got %d, want 2 (pump2, other)", got)
	}
	// Framed-IP claims follow the same rule.
	f := netip.MustParseAddr("10.10.0.50")
	if err := p.Claim("r", f); err != nil {
		t.Fatal(err)
	}
	if err := p.Claim("r", f); err != nil {
		t.Errorf("same identity re-claim: %v", err)
	}
	if err := p.Claim("s", f); !errors.Is(err, ErrInUse) {
		t.Errorf("other identity claim: got %v, want ErrInUse", err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, s := range []string{"10.0.0.0/31", "2001:db8::/64"} {
		if _, err := New(netip.MustParsePrefix(s), netip.Addr{}); err == nil {
			t.Errorf("New(%s): got nil error", s)
		}
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// TestSlice: a gateway of a fleet hands out only its slice; claims and
// reservations still take any pool address.
func TestSlice(t *testing.T) {
	p, err := New(netip.MustParsePrefix("10.10.0.0/24"), netip.MustParseAddr("10.10.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetSlice(netip.MustParseAddr("10.10.0.64"), netip.MustParseAddr("10.10.0.66")); err != nil {
		t.Fatal(err)
	}
	if err := p.SetSlice(netip.MustParseAddr("10.10.1.64"), netip.MustParseAddr("10.10.0.66")); err == nil {
		t.Error("slice outside the pool accepted")
	}
	if p.Free() != 3 {
		t.Errorf("Free = %d, want 3", p.Free())
	}
	got := map[netip.Addr]bool{}
	for _, id := range []string{"a", "b", "c"} {
		a, err := p.Allocate(id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Compare(netip.MustParseAddr("10.10.0.64")) < 0 || a.Compare(netip.MustParseAddr("10.10.0.66")) > 0 {
			t.Errorf("%s got %s outside the slice", id, a)
		}
		got[a] = true
	}
	if len(got) != 3 {
		t.Errorf("addresses not distinct: %v", got)
	}
	if _, err := p.Allocate("d"); err != ErrExhausted {
		t.Errorf("fourth allocation: %v, want ErrExhausted", err)
	}
	if err := p.Claim("radius-user", netip.MustParseAddr("10.10.0.200")); err != nil {
		t.Errorf("claim outside the slice: %v", err)
	}
}
