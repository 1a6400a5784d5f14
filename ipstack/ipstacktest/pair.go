// Package ipstacktest joins two ipstack.Stacks back to back for tests: what
// one outputs, the other receives, through a goroutine per direction so that
// neither stack is re-entered from its own send path.
package ipstacktest

import (
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/ipstack"
)

// Pair is two connected stacks. Both are closed by t.Cleanup.
type Pair struct {
	// A and B are the two stacks; a packet A outputs is injected into B and
	// vice versa. A is created with Config.Routed (it can own prefixes, as
	// the bridge's stack does).
	A, B *ipstack.Stack
}

// NewPair creates two stacks with the given MTU (0 = default) joined back
// to back, and registers their teardown with t.Cleanup.
func NewPair(t testing.TB, mtu int) *Pair {
	t.Helper()
	ab := make(chan []byte, 1024)
	ba := make(chan []byte, 1024)
	done := make(chan struct{})
	out := func(c chan []byte) func([]byte) error {
		return func(pkt []byte) error {
			select {
			case c <- append([]byte(nil), pkt...):
			case <-done:
			default: // full: drop, like a congested link
			}
			return nil
		}
	}
	a, err := ipstack.New(ipstack.Config{MTU: mtu, Output: out(ab), Routed: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ipstack.New(ipstack.Config{MTU: mtu, Output: out(ba)})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	pump := func(c chan []byte, dst *ipstack.Stack) {
		defer wg.Done()
		for {
			select {
			case p := <-c:
				_ = dst.InjectInbound(p)
			case <-done:
				return
			}
		}
	}
	wg.Add(2)
	go pump(ab, b)
	go pump(ba, a)
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		a.Close()
		b.Close()
	})
	return &Pair{A: a, B: b}
}
