package server

import (
	"net/netip"
	"testing"
	"time"
)

// TestBackoff: after Free failures a source waits Delay, doubling up to
// MaxDelay; the identity is never slowed from an address it logged in
// from; records are forgotten after Forget.
func TestBackoff(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	b := NewBackoff(50, 30*time.Second, 10*time.Minute, time.Hour, func() time.Time { return now })
	attacker, site, other := netip.MustParseAddr("198.51.100.66"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("203.0.113.8")
	b.Succeeded(site, "ops")
	for i := range 50 {
		if w := b.Check(attacker, "ops"); w != 0 {
			t.Fatalf("failure %d: waits %v before the free failures are spent", i+1, w)
		}
		b.Failed(attacker, "ops")
		now = now.Add(100 * time.Millisecond)
	}
	if w := b.CheckSource(attacker); w < 29*time.Second || w > 30*time.Second {
		t.Fatalf("51st attempt from the source: waits %v, want ~30 s", w)
	}
	if w := b.Check(site, "ops"); w != 0 {
		t.Errorf("ops from its own address waits %v", w)
	}
	if w := b.Check(other, "ops"); w != 0 {
		t.Errorf("ops from a fresh address waits %v after one source's 50 failures (the source limit stopped that source)", w)
	}
	// Guessing ops's password spread over many sources: after 4 x 50
	// failures for ops, a fresh address is slowed for ops (not ops's own).
	for i := range 150 {
		b.Failed(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), "ops")
	}
	if w := b.Check(other, "ops"); w == 0 {
		t.Error("ops from a fresh address not slowed after 200 failures for it from many sources")
	}
	if w := b.Check(site, "ops"); w != 0 {
		t.Errorf("ops from its own address waits %v after distributed guessing", w)
	}
	if w := b.Check(other, "site2"); w != 0 {
		t.Errorf("another identity from another address waits %v", w)
	}
	now = now.Add(30 * time.Second)
	b.Failed(attacker, "ops") // the 51st, after waiting: the next waits 60 s
	if w := b.CheckSource(attacker); w < 59*time.Second {
		t.Errorf("52nd attempt waits %v, want 60 s", w)
	}
	for range 20 {
		b.Failed(attacker, "ops")
	}
	if w := b.CheckSource(attacker); w != 10*time.Minute {
		t.Errorf("capped wait: %v, want 10m", w)
	}
	now = now.Add(2 * time.Hour)
	if w := b.CheckSource(attacker); w != 0 {
		t.Errorf("after forget: waits %v", w)
	}
}
