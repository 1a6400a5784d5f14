package uplink

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

// TestFullJitter: delays stay in [1ns, min(max, base·2^n)] and a fleet's
// first reconnects spread over the window rather than coinciding.
func TestFullJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base, maxDelay := time.Second, time.Minute
	for n := 0; n < 40; n++ {
		ceil := maxDelay
		if n < 6 {
			ceil = base << n
		}
		for range 200 {
			d := fullJitter(r, base, maxDelay, n)
			if d <= 0 || d > ceil {
				t.Fatalf("n=%d: delay %v outside (0, %v]", n, d, ceil)
			}
		}
	}
	// 1000 sites dropped at once, third attempt (window 8 s): how many
	// land in the same 100 ms slot at most?
	slots := map[int64]int{}
	worst := 0
	for range 1000 {
		s := int64(fullJitter(r, base, maxDelay, 3) / (100 * time.Millisecond))
		slots[s]++
		worst = max(worst, slots[s])
	}
	if len(slots) < 70 || worst > 40 {
		t.Fatalf("1000 reconnects used %d of 80 slots, busiest %d: not spread", len(slots), worst)
	}
}

// TestFailoverReconnectStableInterface: the first gateway fails (IKE),
// the client fails over to the second, packets flow through the one
// handler; when that gateway shuts down the client reconnects by itself and
// the same handler and WritePacket carry on over the new tunnel.
func TestFailoverReconnectStableInterface(t *testing.T) {
	stacktest.CheckGoroutines(t)
	pairs := make(chan *l2tpipsectest.Pair, 8)
	var mu sync.Mutex
	var states []State
	dial := func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		if cfg.Gateway == "192.0.2.1:500" { // gw-a.example, resolved by the client
			return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrTimeout}
		}
		p, err := l2tpipsectest.Start(t, l2tpipsectest.Options{Client: func(cc *l2tpipsec.ClientConfig) { cc.PacketHandler = cfg.PacketHandler }, Server: func(sc *l2tpipsec.ServerConfig) {
			sc.OnSession = func(s *l2tpipsec.ServerSession) {} // sessions found via Sessions()
		}})
		if err != nil {
			return nil, err
		}
		pairs <- p
		return p.Client, nil
	}
	c, err := New(Config{
		Gateways: []Gateway{{Addr: "gw-a.example"}, {Addr: "gw-b.example"}},
		Dial:     dial, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			return map[string][]netip.Addr{"gw-a.example": {netip.MustParseAddr("192.0.2.1")}, "gw-b.example": {netip.MustParseAddr("192.0.2.2")}}[host], nil
		},
		OnState: func(s Status) { mu.Lock(); states = append(states, s.State); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint32, 64)
	c.SetPacketHandler(func(p []byte) { got <- binary.BigEndian.Uint32(p[28:]) })
	if err := c.WritePacket(make([]byte, 64)); !errors.Is(err, ErrDown) {
		t.Fatalf("write before start: %v, want ErrDown", err)
	}
	c.Start()
	t.Cleanup(func() { c.Close() })

	waitUp := func() (*l2tpipsectest.Pair, *l2tpipsec.ServerSession) {
		t.Helper()
		var p *l2tpipsectest.Pair
		select {
		case p = <-pairs:
		case <-time.After(30 * time.Second):
			t.Fatalf("no tunnel; status %+v", c.Status())
		}
		deadline := time.Now().Add(10 * time.Second)
		for c.Status().State != StateUp || len(p.Server.Sessions()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("not up: %+v", c.Status())
			}
			time.Sleep(time.Millisecond)
		}
		return p, p.Server.Sessions()[0]
	}
	exchange := func(ss *l2tpipsec.ServerSession, tag uint32) {
		t.Helper()
		var up = make(chan uint32, 4)
		ss.SetPacketHandler(func(p []byte) { up <- binary.BigEndian.Uint32(p[28:]) })
		if err := c.WritePacket(pkttest.Tagged(c.LocalAddr(), l2tpipsectest.ServerAddr, tag, 64)); err != nil {
			t.Fatal(err)
		}
		if err := ss.WritePacket(pkttest.Tagged(l2tpipsectest.ServerAddr, c.LocalAddr(), tag, 64)); err != nil {
			t.Fatal(err)
		}
		for _, ch := range []chan uint32{up, got} {
			select {
			case v := <-ch:
				if v != tag {
					t.Fatalf("got packet %d, want %d", v, tag)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("packet %d lost", tag)
			}
		}
	}

	p1, ss1 := waitUp()
	st := c.Status()
	if st.Gateway != "gw-b.example" || st.LastPhase != l2tpipsec.PhaseIKE || st.Failures != 1 || st.Addr != l2tpipsectest.ClientAddr {
		t.Fatalf("after fail-over: %+v", st)
	}
	exchange(ss1, 1)

	p1.Server.Close() // gateway restart: StopCCN + Delete
	_, ss2 := waitUp()
	st = c.Status()
	if st.Connects != 2 || st.LastErr == nil || st.Gateway != "gw-b.example" {
		t.Fatalf("after reconnect: %+v", st)
	}
	t.Logf("reconnected after %v; last failure: %v", st.LastPhase, st.LastErr)
	exchange(ss2, 2)

	c.Close()
	if c.Status().State != StateStopped {
		t.Fatalf("state after Close: %v", c.Status().State)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []State{StateConnecting, StateBackoff, StateConnecting, StateUp}
	for i, s := range want {
		if i >= len(states) || states[i] != s {
			t.Fatalf("state sequence %v, want it to start with %v", states, want)
		}
	}
}
