package uplink

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

// heFixture is a client for the dual-stack name gw.example.net
// (2001:db8::1 and 192.0.2.1) on a fake clock; behave decides, per
// target, what its gateway does: "dead" never answers (the attempt waits
// for its context), "unreachable" fails at once, "up" answers and comes up
// (a real tunnel pair over in-memory pipes, OnAnswer fired by its IKE).
type heFixture struct {
	t      *testing.T
	clk    *stacktest.Clock
	c      *Client
	mu     sync.Mutex
	dialed map[string]time.Time // target → fake time its attempt started
	ended  map[string]error     // target → how its attempt ended
	events chan string
	seen   map[string]bool
}

func newHEFixture(t *testing.T, behave map[string]string) *heFixture {
	f := &heFixture{t: t, clk: stacktest.NewClock(), dialed: map[string]time.Time{}, ended: map[string]error{}, events: make(chan string, 16), seen: map[string]bool{}}
	dial := func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		f.mu.Lock()
		f.dialed[cfg.Gateway] = f.clk.Now()
		f.mu.Unlock()
		f.events <- "dial " + cfg.Gateway
		var tn *l2tpipsec.Tunnel
		var err error
		switch behave[cfg.Gateway] {
		case "dead":
			<-ctx.Done()
			err = &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ctx.Err()}
		case "unreachable":
			err = &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: errors.New("sendto: network is unreachable")}
		default:
			var p *l2tpipsectest.Pair
			p, err = l2tpipsectest.Start(t, l2tpipsectest.Options{RealClock: true, Client: func(cc *l2tpipsec.ClientConfig) {
				cc.PacketHandler, cc.OnAnswer = cfg.PacketHandler, cfg.OnAnswer
			}})
			if err == nil {
				tn = p.Client
			}
		}
		f.mu.Lock()
		f.ended[cfg.Gateway] = err
		f.mu.Unlock()
		f.events <- "end " + cfg.Gateway
		return tn, err
	}
	c, err := New(Config{
		Gateways: []Gateway{{Addr: "gw.example.net"}}, Dial: dial, Clock: f.clk,
		Resolve: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}, nil
		},
		Rand: rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	return f
}

// await waits for an event, in any order with the others (generous
// real-time deadline: only a hang fails).
func (f *heFixture) await(want string) {
	f.t.Helper()
	deadline := time.After(30 * time.Second)
	for !f.seen[want] {
		select {
		case ev := <-f.events:
			f.seen[ev] = true
		case <-deadline:
			f.t.Fatalf("no %q within 30 s", want)
		}
	}
}

func (f *heFixture) waitUp() Status {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st := f.c.Status(); st.State == StateUp {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("not up: %+v", f.c.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const (
	he6 = "[2001:db8::1]:500"
	he4 = "192.0.2.1:500"
)

// TestHappyEyeballsDeadAAAA (fake clock): the AAAA target never answers;
// the A target is dialled exactly HappyEyeballsDelay (250 ms, within the
// 300 ms bound) after it, not before, wins, and the IPv6 attempt is
// cancelled (its Dial returns) as soon as the gateway answered over IPv4.
func TestHappyEyeballsDeadAAAA(t *testing.T) {
	stacktest.CheckGoroutines(t)
	f := newHEFixture(t, map[string]string{he6: "dead", he4: "up"})
	t0 := f.clk.Now()
	f.c.Start()
	defer f.c.Close()
	f.await("dial " + he6)
	f.clk.Advance(DefaultHappyEyeballsDelay - time.Millisecond)
	f.mu.Lock()
	_, early := f.dialed[he4]
	f.mu.Unlock()
	if early {
		t.Fatal("IPv4 dialled before the Happy Eyeballs delay")
	}
	f.clk.Advance(time.Millisecond)
	f.await("dial " + he4)
	f.await("end " + he6) // cancelled by the IPv4 answer
	st := f.waitUp()
	f.mu.Lock()
	at := f.dialed[he4].Sub(t0)
	f.mu.Unlock()
	if at > 300*time.Millisecond || at < DefaultHappyEyeballsDelay {
		t.Fatalf("IPv4 attempt started %v after the IPv6 one; want 250 ms (≤ 300 ms)", at)
	}
	if st.Target != he4 {
		t.Fatalf("up on %q, want %s", st.Target, he4)
	}
	t.Logf("dead AAAA: A dialled after %v (fake clock), up on %s", at, st.Target)
}

// TestHappyEyeballsIPv6Wins: both families answer; IPv6 answers before
// the delay, so IPv4 is never dialled.
func TestHappyEyeballsIPv6Wins(t *testing.T) {
	stacktest.CheckGoroutines(t)
	f := newHEFixture(t, map[string]string{he6: "up", he4: "up"})
	f.c.Start()
	defer f.c.Close()
	st := f.waitUp()
	if st.Target != he6 {
		t.Fatalf("up on %q, want %s", st.Target, he6)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dialed[he4]; ok {
		t.Fatal("IPv4 dialled although IPv6 answered at once")
	}
}

// TestHappyEyeballsUnreachableAAAA: an attempt that fails at once (no
// route to the AAAA) starts the A attempt at once (RFC 8305 §5), without
// waiting for the delay: the fake clock never moves.
func TestHappyEyeballsUnreachableAAAA(t *testing.T) {
	stacktest.CheckGoroutines(t)
	f := newHEFixture(t, map[string]string{he6: "unreachable", he4: "up"})
	f.c.Start()
	defer f.c.Close()
	st := f.waitUp()
	if st.Target != he4 {
		t.Fatalf("up on %q, want %s", st.Target, he4)
	}
	f.mu.Lock()
	d := f.clk.Now().Sub(f.dialed[he4])
	f.mu.Unlock()
	if d != 0 {
		t.Fatalf("fake clock moved %v", d)
	}
}

// TestHappyEyeballsBothDead: neither answers; the attempt fails silent
// (so fail-over ranks the gateway as silent) after AttemptTimeout, with
// both attempts ended.
func TestHappyEyeballsBothDead(t *testing.T) {
	stacktest.CheckGoroutines(t)
	f := newHEFixture(t, map[string]string{he6: "dead", he4: "dead"})
	f.c.cfg.AttemptTimeout = 50 * time.Millisecond // real time: the context deadline
	f.c.Start()
	defer f.c.Close()
	f.await("dial " + he6)
	f.clk.Advance(DefaultHappyEyeballsDelay)
	f.await("dial " + he4)
	f.await("end " + he6)
	f.await("end " + he4)
	deadline := time.Now().Add(30 * time.Second)
	for f.c.Status().Failures == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no failure recorded: %+v", f.c.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
	st := f.c.Status()
	if !silent(st.LastErr) {
		t.Fatalf("both dead: %v is not a silent failure", st.LastErr)
	}
}
