package proxy

import (
	"testing"
	"time"
)

// TestForwarderMIDsAcrossRestart: the Message IDs a restarted forwarder
// uses for an endpoint never repeat one the killed forwarder used within
// EXCHANGE_LIFETIME (247 s), even when the restart comes 1 s later and the
// old one had just drained a backlog of 200 messages; within one process
// no ID repeats for 65535 messages.
func TestForwarderMIDsAcrossRestart(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	clock := t0
	old := &forwarder{now: func() time.Time { return clock }}
	used := map[uint16]time.Time{}
	for i := range 400 { // 200 spread over 200 s, then a 200-message burst
		if i < 200 {
			clock = t0.Add(time.Duration(i) * time.Second)
		}
		mid := old.newMID()
		if mid == 0 {
			t.Fatal("MID 0")
		}
		if _, dup := used[mid]; dup {
			t.Fatalf("old forwarder repeated MID %d", mid)
		}
		used[mid] = clock
	}
	clock = clock.Add(time.Second) // killed and restarted 1 s later
	fresh := &forwarder{now: func() time.Time { return clock }}
	for range 1000 {
		if mid := fresh.newMID(); !used[mid].IsZero() && clock.Sub(used[mid]) < 247*time.Second {
			t.Fatalf("restarted forwarder reused MID %d from %v ago", mid, clock.Sub(used[mid]))
		}
	}
	one := &forwarder{now: func() time.Time { return t0 }}
	seen := map[uint16]bool{}
	for range 65535 {
		mid := one.newMID()
		if seen[mid] {
			t.Fatalf("MID %d repeated within 65535 messages", mid)
		}
		seen[mid] = true
	}
}
