package spool

import (
	"testing"
)

// TestDeliveredQoS0Released: delivered QoS 0 messages do not stay
// referenced (with their payloads) after their Ack; before, every one of
// them stayed in the overflow list until an overflow scan reached it, so a
// device's QoS 0 traffic held memory for good while the uplink was up.
func TestDeliveredQoS0Released(t *testing.T) {
	s := openT(t, Config{Dir: t.TempDir()})
	const n = 5000
	for i := 0; i < n; i++ {
		ep := "a"
		if i%3 == 0 {
			ep = "b" // interleaved endpoints: acks are not only at the head
		}
		seq, err := s.Append(msg(ep, 0, i))
		if err != nil {
			t.Fatal(err)
		}
		if i%3 != 0 {
			if err := s.Ack(ep, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.mu.Lock()
	held, dead := len(s.qos0), s.qos0Dead
	s.mu.Unlock()
	live := (n + 2) / 3 // endpoint b's, never acked
	if held > 2*live+64 {
		t.Fatalf("%d QoS 0 entries referenced (%d of them resolved) for %d live messages", held, dead, live)
	}
	// The overflow scan still drops b's oldest first.
	for _, m := range s.Pending("b", 0, 1) {
		if m.Payload == nil || string(m.Payload) != "000000" {
			t.Fatalf("b's oldest is %q", m.Payload)
		}
	}
	t.Logf("%d appended, %d live, %d referenced in the overflow list", n, live, held)
}
