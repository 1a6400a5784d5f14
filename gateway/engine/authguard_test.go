package engine_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestBackoffSlowsGuesserNotFleet (bounded under attack): 50 wrong PPP
// passwords from one source, then the 51st attempt from that source is
// not answered and must wait >= 30 s (bound: auth_backoff delay 30 s after
// 50 free failures), while the guessed identity logs in at once from the
// address it used before and from a fresh source, and another identity
// from a fresh source.
func TestBackoffSlowsGuesserNotFleet(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: ops-laptop, auth: psk, ppp: {user: ops, password: right}}
  - {name: site2, auth: psk, ppp: {password: pw2}}
auth_backoff: {free_failures: 50, delay: 30s, max_delay: 10m}
`)
	// The IKE engine's own per-source phase 1 pacing (5/s) would make the
	// 50 guesses slow; the backoff is what this test is about.
	g, lb := startLoggedWith(t, cfg, engine.Config{RatePerSource: 1000, BurstPerSource: 1000})
	legit := g.clientConfig("ops", "right")
	legit.LocalIKE, legit.LocalNATT = "127.0.0.9:0", "127.0.0.9:0"
	tn, err := tryDial(t, legit, 20*time.Second)
	if err != nil {
		t.Fatalf("ops before the attack: %v", err)
	}
	_ = tn.Close()

	const guesses, workers = 50, 10
	var wg sync.WaitGroup
	errs := make(chan error, guesses)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < guesses; i += workers {
				cc := g.clientConfig("ops", fmt.Sprintf("guess-%d", i))
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := l2tpipsec.Dial(ctx, cc)
				cancel()
				if err == nil {
					errs <- fmt.Errorf("guess %d logged in", i)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("127.0.0.1")
	if w := g.srv.Env().Backoff().CheckSource(src); w < 25*time.Second {
		t.Fatalf("after %d failures the source waits %v, want about 30 s", guesses, w)
	}
	// The 51st: its Main Mode is not answered.
	t0 := time.Now()
	if _, err := tryDial(t, g.clientConfig("ops", "guess-51"), 3*time.Second); l2tpipsec.PhaseOf(err) != l2tpipsec.PhaseIKE {
		t.Fatalf("51st guess: got %v, want no phase 1 (backing off)", err)
	}
	if w := g.srv.Env().Backoff().CheckSource(src); w < 25*time.Second {
		t.Errorf("51st guess must still wait %v, want >= 25 s of the 30 s", w)
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="auth_backoff"}`, 1)
	if !lb.has("Main Mode refused: too many failed logins from this source, backing off", "127.0.0.1") {
		t.Errorf("no backoff line in:\n%s", lb.String())
	}
	// Meanwhile the fleet is not slowed.
	t1 := time.Now()
	if _, err := tryDial(t, legit, 10*time.Second); err != nil {
		t.Fatalf("ops from its own address during the backoff: %v", err)
	}
	fresh := g.clientConfig("ops", "right")
	fresh.LocalIKE, fresh.LocalNATT = "127.0.0.11:0", "127.0.0.11:0"
	if _, err := tryDial(t, fresh, 10*time.Second); err != nil {
		t.Fatalf("ops (the guessed identity) from a fresh source during the backoff: %v", err)
	}
	s2 := g.clientConfig("site2", "pw2")
	s2.LocalIKE, s2.LocalNATT = "127.0.0.10:0", "127.0.0.10:0"
	if _, err := tryDial(t, s2, 10*time.Second); err != nil {
		t.Fatalf("site2 from another source during the backoff: %v", err)
	}
	t.Logf("51st guess refused after %v; ops and site2 logged in within %v", t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
}

// TestTunnelCapPerPeer (bounded under attack): a peer's third L2TP tunnel
// without a session is refused (bound: 2 tunnels per IPsec peer), a
// second session on one tunnel while the first has not authenticated is
// refused (bound: 1), and a tunnel that never carries an authenticated
// session is closed after the unauthenticated timeout.
func TestTunnelCapPerPeer(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: ops-laptop, auth: psk, ppp: {user: ops, password: right}}
`)
	g, lb := startLoggedWith(t, cfg, engine.Config{UnauthTimeout: 3 * time.Second})
	tn, err := tryDial(t, g.clientConfig("ops", "right"), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second, err := tn.DialL2TP(ctx)
	if err != nil {
		t.Fatalf("second tunnel: %v", err)
	}
	// Over the second tunnel: one session may be authenticating (no PPP
	// client here), a second one at the same time is refused.
	if _, err := second.OpenSession(ctx); err != nil {
		t.Fatalf("first session on the second tunnel: %v", err)
	}
	if s2, err := second.OpenSession(ctx); err == nil {
		select {
		case <-s2.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a second unauthenticated session on one tunnel is still open after 5 s")
		}
	}
	waitFor(t, "second unauthenticated session refused", func() bool { return g.eng.Tunnel().GuardStats().SessionsRefused.Load() == 1 })
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="l2tp_second_unauth_session"}`, 1)
	if !lb.has("L2TP session refused: the tunnel already has a session that has not authenticated") {
		t.Errorf("no second-session line in:\n%s", lb.String())
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel3()
	if _, err := tn.DialL2TP(ctx3); err == nil {
		t.Fatal("third tunnel without a session was accepted")
	}
	if n := g.eng.Tunnel().GuardStats().TunnelsRefused.Load(); n < 1 {
		t.Errorf("tunnels refused: %d", n)
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="l2tp_tunnel_cap"}`, 1)
	if !lb.has("L2TP tunnel refused: peer already has the maximum number of tunnels") {
		t.Errorf("no tunnel cap line in:\n%s", lb.String())
	}
	// The server closes the tunnel without a session (StopCCN; the
	// client keeps it lingering, RFC 2661 §5.7), which frees its slot.
	waitFor(t, "the tunnel without a session closed", func() bool { return g.eng.Tunnel().GuardStats().TunnelsTimedOut.Load() >= 1 })
	_ = second
	ctx4, cancel4 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel4()
	if _, err := tn.DialL2TP(ctx4); err != nil {
		t.Fatalf("a new tunnel after the timed-out one was closed: %v", err)
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="l2tp_tunnel_unauth_timeout"}`, 1)
	select {
	case <-tn.Done():
		t.Fatalf("the authenticated tunnel went down: %v", tn.Err())
	default:
	}
}
