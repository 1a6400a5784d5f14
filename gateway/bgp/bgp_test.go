package bgp

import (
	"net/netip"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestDesiredState checks the owner bookkeeping without a network: a
// prefix two owners announce stays until both withdrew it, and the cap
// holds.
func TestDesiredState(t *testing.T) {
	s, err := New(Config{LocalAS: 65010, RouterID: netip.MustParseAddr("192.0.2.1"), MaxPrefixes: 3})
	if err != nil {
		t.Fatal(err)
	}
	s.Announce(1, pfx("10.10.0.7/32", "10.10.8.0/24"))
	s.Announce(2, pfx("10.10.0.7/32", "10.10.8.0/24")) // relogin overlap
	s.Withdraw(1)
	if got := s.Announced(); len(got) != 2 {
		t.Fatalf("after one owner withdrew: %v, want both prefixes", got)
	}
	s.Announce(3, pfx("10.10.0.9/32", "10.10.9.0/24", "10.10.10.0/24"))
	if got := s.Announced(); len(got) != 3 {
		t.Fatalf("cap 3: announced %v", got)
	}
	s.Withdraw(2)
	s.Withdraw(3)
	if got := s.Announced(); len(got) != 0 {
		t.Fatalf("after all withdrew: %v", got)
	}
	if _, err := New(Config{LocalAS: 1}); err == nil {
		t.Error("New without router ID: no error")
	}
}
