package uplink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestPickPrefersAnsweringGateway: pick's ranks (failover.go).
func TestPickPrefersAnsweringGateway(t *testing.T) {
	clk := stacktest.NewClock()
	c, err := New(Config{Gateways: []Gateway{{Addr: "192.0.2.1"}, {Addr: "192.0.2.2"}}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	past, soon, later := now.Add(-time.Second), now.Add(10*time.Second), now.Add(30*time.Second)
	for _, tc := range []struct {
		name string
		a, b gwHealth
		want int
	}{
		{"both healthy: config order", gwHealth{}, gwHealth{}, 0},
		{"silent first, healthy second", gwHealth{silent: true, downUntil: past, failures: 1}, gwHealth{}, 1},
		// The operator's Disconnect on b: a is dead since long ago.
		{"b ended our tunnel itself, a silent", gwHealth{silent: true, downUntil: past, failures: 3}, gwHealth{endedBySelf: true, downUntil: later}, 1},
		{"b refused or failed answering (cooling), a silent and cooled down", gwHealth{silent: true, downUntil: past, failures: 1}, gwHealth{downUntil: later, failures: 1}, 0},
		{"both cooling: the one whose cooldown ends first", gwHealth{silent: true, downUntil: later}, gwHealth{silent: true, downUntil: soon}, 1},
		{"a cooling, b healthy", gwHealth{downUntil: later, failures: 1}, gwHealth{}, 1},
	} {
		c.health[0], c.health[1] = tc.a, tc.b
		if got := c.pick(now); got != tc.want {
			t.Errorf("%s: pick = %d, want %d", tc.name, got, tc.want)
		}
	}
	// AnswerTimeout: none only at a gateway not lost itself whose every
	// alternative is lost and cooling.
	lost := gwHealth{silent: true, lost: true, downUntil: later}
	for _, tc := range []struct {
		name string
		a, b gwHealth
		want time.Duration
	}{
		{"a healthy, b lost and cooling", gwHealth{}, lost, 0},
		{"a silent on an attempt, b lost and cooling", gwHealth{silent: true, downUntil: soon}, lost, 0},
		{"both lost (a's tunnel died too)", lost, lost, DefaultAnswerTimeout},
		{"b lost, cooldown over", gwHealth{}, gwHealth{silent: true, lost: true, downUntil: past}, DefaultAnswerTimeout},
		{"b silent on an attempt", gwHealth{}, gwHealth{silent: true, downUntil: later}, DefaultAnswerTimeout},
	} {
		c.health[0], c.health[1] = tc.a, tc.b
		if got := c.answerTimeout(0, now); got != tc.want {
			t.Errorf("%s: AnswerTimeout at a %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		err                      error
		silent, ended, refusedBy bool
	}{
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrTimeout}, true, false, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: l2tpipsec.ErrSetupTimeout}, true, false, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseIPsec, Err: ike.ErrDeadPeer}, true, false, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhasePPP, Err: ppp.ErrEchoTimeout}, true, false, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhasePPP, Err: ppp.ErrPeerTerminated}, false, true, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseL2TP, Err: l2tp.ErrPeerStop}, false, true, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseIPsec, Err: fmt.Errorf("%w IPsec SA 1", ike.ErrPeerDeleted)}, false, true, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseL2TP, Err: l2tpipsec.ErrSetupTimeout}, false, false, false},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhasePPPAuth, Err: ppp.ErrAuthFailed}, false, false, true},
		{&l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrNotGateway}, false, false, true},
	} {
		if s, e, r := silent(tc.err), endedByGateway(tc.err), refused(tc.err); s != tc.silent || e != tc.ended || r != tc.refusedBy {
			t.Errorf("%v: silent %v ended %v refused %v, want %v %v %v", tc.err, s, e, r, tc.silent, tc.ended, tc.refusedBy)
		}
	}
}

// TestGatewayThatAnswersIsRetriedFirst (fake clock): gateway a is dead
// (IKE never answers), b fails silently four times (backoff grows) then
// comes up; b then ends our tunnel itself (StopCCN, as on an operator's
// Disconnect). The client goes back to b at once, not to the dead a, and
// the fresh answer reset the backoff to [0, 2·MinBackoff). Every attempt
// carries AnswerTimeout since there are two gateways.
func TestGatewayThatAnswersIsRetriedFirst(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clk := stacktest.NewClock()
	var mu sync.Mutex
	var dialed []string
	var answerTimeouts []time.Duration
	bFails := 4
	pairs := make(chan *l2tpipsectest.Pair, 4)
	dial := func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		mu.Lock()
		dialed = append(dialed, cfg.Gateway)
		answerTimeouts = append(answerTimeouts, cfg.AnswerTimeout)
		fail := cfg.Gateway == "192.0.2.1:500" || bFails > 0
		if cfg.Gateway == "192.0.2.2:500" && bFails > 0 {
			bFails--
		}
		mu.Unlock()
		if fail {
			return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrTimeout}
		}
		p, err := l2tpipsectest.Start(t, l2tpipsectest.Options{Client: func(cc *l2tpipsec.ClientConfig) { cc.PacketHandler = cfg.PacketHandler }})
		if err != nil {
			return nil, err
		}
		pairs <- p
		return p.Client, nil
	}
	c, err := New(Config{
		Gateways: []Gateway{{Addr: "192.0.2.1"}, {Addr: "192.0.2.2"}}, Dial: dial, Clock: clk,
		MinBackoff: time.Second, MaxBackoff: 2 * time.Minute, Rand: rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Close()
	drive := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v, dialed %v", what, c.Status(), dialed)
			}
			clk.Advance(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
	}
	drive("up on b", func() bool { return c.Status().State == StateUp })
	p := <-pairs
	mu.Lock()
	n := len(dialed)
	mu.Unlock()
	attemptsBefore := c.Status().Attempts
	p.Server.Close() // StopCCN + Delete: b is alive and says so
	drive("backoff after b ended the tunnel", func() bool { return c.Status().State == StateBackoff && c.Status().Attempts == attemptsBefore })
	st := c.Status()
	if d := st.NextAttempt.Sub(st.Since); d > 2*time.Second {
		t.Errorf("backoff after the gateway's own close %v, want < 2 s (a fresh answer resets it)", d)
	}
	if !endedByGateway(st.LastErr) {
		t.Errorf("last error %v: not recognised as the gateway ending the tunnel", st.LastErr)
	}
	drive("up again", func() bool { return c.Status().State == StateUp })
	mu.Lock()
	defer mu.Unlock()
	if got := dialed[n]; got != "192.0.2.2:500" {
		t.Errorf("after b ended the tunnel the client dialled %s first, want b (192.0.2.2:500); sequence %v", got, dialed)
	}
	for i, d := range answerTimeouts {
		if d != DefaultAnswerTimeout {
			t.Errorf("attempt %d: AnswerTimeout %v, want %v", i, d, DefaultAnswerTimeout)
		}
	}
	t.Logf("dialled %v; backoff after b's close %v (failures before: %d)", dialed, st.NextAttempt.Sub(st.Since), st.Failures)
}

// TestLostGatewayNotRetriedFirst (fake clock): our tunnel through a goes
// silent (a was killed); b, flooded by a's edges, answers our first
// attempt late (the set-up then times out) and the second not at all,
// then comes up. Every attempt goes to b: a answered slowly is alive, a
// silent attempt at b does not send us back to the lost a while a cools
// down, and b's attempts carry no AnswerTimeout (nowhere better to go).
// Before, the client went back to the dead a after b's first failure.
func TestLostGatewayNotRetriedFirst(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clk := stacktest.NewClock()
	const a, b = "192.0.2.1:500", "192.0.2.2:500"
	var mu sync.Mutex
	var dialed []string
	var answerTimeouts []time.Duration
	bCalls := 0
	pairs := make(chan *l2tpipsectest.Pair, 4)
	up := func(cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		p, err := l2tpipsectest.Start(t, l2tpipsectest.Options{Client: func(cc *l2tpipsec.ClientConfig) { cc.PacketHandler = cfg.PacketHandler }})
		if err != nil {
			return nil, err
		}
		pairs <- p
		return p.Client, nil
	}
	dial := func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		mu.Lock()
		dialed = append(dialed, cfg.Gateway)
		answerTimeouts = append(answerTimeouts, cfg.AnswerTimeout)
		first := len(dialed) == 1
		if cfg.Gateway == b {
			bCalls++
		}
		k := bCalls
		mu.Unlock()
		switch {
		case first && cfg.Gateway == a:
			return up(cfg)
		case cfg.Gateway == a:
			return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrTimeout}
		case k == 1: // answered late, the set-up did not finish
			if cfg.OnAnswer != nil {
				cfg.OnAnswer()
			}
			return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: l2tpipsec.ErrSetupTimeout}
		case k == 2: // nothing at all
			return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseIKE, Err: ike.ErrTimeout}
		default:
			return up(cfg)
		}
	}
	c, err := New(Config{
		Gateways: []Gateway{{Addr: "192.0.2.1"}, {Addr: "192.0.2.2"}}, Dial: dial, Clock: clk,
		MinBackoff: time.Second, MaxBackoff: 2 * time.Minute, Rand: rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Close()
	drive := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v, dialed %v", what, c.Status(), dialed)
			}
			clk.Advance(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
	}
	drive("up on a", func() bool { return c.Status().State == StateUp })
	p := <-pairs
	start := clk.Now()
	p.Link.SetDown(true) // a is killed: nothing comes back
	l2tpipsectest.Drive(t, p.Clock, time.Second, 30*time.Second, "the tunnel through a goes silent", func() bool {
		select {
		case <-p.Client.Done():
			return true
		default:
			return false
		}
	})
	if err := p.Client.Err(); !silent(err) {
		t.Fatalf("tunnel through a ended with %v: not silent", err)
	}
	drive("up on b", func() bool { return c.Status().State == StateUp && c.Status().Gateway == "192.0.2.2" })
	took := clk.Now().Sub(start)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{a, b, b, b}; fmt.Sprint(dialed) != fmt.Sprint(want) {
		t.Errorf("dialled %v, want %v (the lost a not retried while it cools down)", dialed, want)
	}
	for i, d := range answerTimeouts[1:] {
		if d != 0 {
			t.Errorf("attempt %d at b: AnswerTimeout %v, want none (the other gateway is lost and cooling)", i+1, d)
		}
	}
	if took >= DefaultCooldown {
		t.Errorf("back up after %v of the client's clock, want < the %v cooldown", took, DefaultCooldown)
	}
	t.Logf("dialled %v; up on b after %v (client clock) and %d failures", dialed, took, c.Status().Failures)
}
