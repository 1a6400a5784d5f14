package engine

import (
	"net/netip"
	"testing"
	"time"
)

func TestSetupClock(t *testing.T) {
	var c setupClock
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
	c.note(a, t0)                     // a phase 1 rekey: never reaches IPCP
	c.note(a, t0.Add(30*time.Second)) // a new set-up from the same NAT
	c.note(b, t0.Add(31*time.Second))
	if got, ok := c.take(a, t0.Add(30*time.Second+40*time.Millisecond)); !ok || got != t0.Add(30*time.Second) {
		t.Errorf("take a: %v %v, want the newest first message", got, ok)
	}
	if _, ok := c.take(b, t0.Add(30*time.Second)); ok {
		t.Error("took a first message later than IPCP up")
	}
	if _, ok := c.take(a, t0.Add(setupWindow+time.Second)); ok {
		t.Error("took a first message older than setupWindow")
	}
	if got, ok := c.take(b, t0.Add(32*time.Second)); !ok || got != t0.Add(31*time.Second) {
		t.Errorf("take b: %v %v", got, ok)
	}
	if c.n != 0 || len(c.byIP) != 0 {
		t.Errorf("left %d entries in %d addresses", c.n, len(c.byIP))
	}
	// A flood of first messages that never finish stays bounded.
	for i := range 3 * admittedMax {
		c.note(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if c.n > admittedMax {
		t.Errorf("%d entries held, bound %d", c.n, admittedMax)
	}
}
