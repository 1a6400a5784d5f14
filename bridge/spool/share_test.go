package spool

import (
	"errors"
	"strings"
	"testing"
)

// TestEndpointShare: one endpoint flooding fills only its own share
// (issue 18): its QoS 1 messages are refused with ErrShareFull (an
// ErrFull), its QoS 0 ones push out only its own oldest QoS 0, and every
// other endpoint still gets its QoS 1 messages in.
func TestEndpointShare(t *testing.T) {
	const share = 64 << 10
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, MaxBytes: 4 * share, EndpointMaxBytes: share})
	big := strings.Repeat("x", 1000)
	m := func(ep string, qos byte) Message {
		return Message{Endpoint: ep, Topic: "t", QoS: qos, Payload: []byte(big)}
	}
	// Others' QoS 0 is queued first: the flood must not push it out.
	if _, err := s.Append(m("quiet-0", 0)); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for i := 0; i < 1000; i++ {
		_, err := s.Append(m("flood", 1))
		if errors.Is(err, ErrShareFull) {
			if !errors.Is(err, ErrFull) {
				t.Fatal("ErrShareFull is not an ErrFull")
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	_, b, _ := s.Depth("flood")
	if b > share || accepted == 0 || s.Stats().RefusedShare.Load() != 1 {
		t.Fatalf("flood: accepted %d, %d bytes (share %d), refused %d", accepted, b, share, s.Stats().RefusedShare.Load())
	}
	for i := 0; i < 100; i++ { // QoS 0 flood: own share still full of QoS 1
		if _, err := s.Append(m("flood", 0)); !errors.Is(err, ErrShareFull) {
			t.Fatalf("flood QoS 0: %v, want ErrShareFull", err)
		}
	}
	for _, ep := range []string{"a", "b", "c"} {
		for i := 0; i < 20; i++ {
			if _, err := s.Append(m(ep, 1)); err != nil {
				t.Fatalf("%s QoS 1 #%d refused while flood is full: %v", ep, i, err)
			}
		}
	}
	if n, _, _ := s.Depth("quiet-0"); n != 1 {
		t.Fatalf("quiet endpoint's QoS 0 was dropped by another's flood")
	}
	t.Logf("flood accepted %d (%d bytes of %d), refused %d; others accepted 60", accepted, b, share, s.Stats().RefusedShare.Load())
	// The share is per endpoint across a restart too.
	_ = s.Close()
	s2 := openT(t, Config{Dir: dir, MaxBytes: 4 * share, EndpointMaxBytes: share})
	if _, err := s2.Append(m("flood", 1)); !errors.Is(err, ErrShareFull) {
		t.Fatalf("after reopen: flood append %v, want ErrShareFull", err)
	}
	if _, err := s2.Append(m("a", 1)); err != nil {
		t.Fatalf("after reopen: a: %v", err)
	}
}

// TestDropEndpoint: a removed endpoint's messages are dropped (and stay
// dropped after a restart); the others' are untouched.
func TestDropEndpoint(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	for i := 0; i < 5; i++ {
		for _, ep := range []string{"gone", "kept"} {
			if _, err := s.Append(msg(ep, 1, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.DropEndpoint("gone")
	if err != nil || n != 5 {
		t.Fatalf("DropEndpoint = %d, %v; want 5", n, err)
	}
	if got := s.Endpoints(); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("endpoints after drop: %v", got)
	}
	_ = s.Close()
	s2 := openT(t, Config{Dir: dir})
	if got := payloads(s2.Pending("gone", 0, 10)); len(got) != 0 {
		t.Fatalf("dropped messages recovered: %v", got)
	}
	if got := payloads(s2.Pending("kept", 0, 10)); len(got) != 5 {
		t.Fatalf("kept: %v", got)
	}
}
