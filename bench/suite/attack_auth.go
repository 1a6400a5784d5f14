package suite

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

// benchAttackAuth measures the gateway's guessing rows of the "Under
// attack" table (issue 18): the failure backoff (TestBackoffSlowsGuesserNotFleet)
// and the per-peer L2TP tunnel cap (TestTunnelCapPerPeer).
func benchAttackAuth(o *Options, rep *Report) {
	_, msg, err := runScoped("attack-auth", func(t testing.TB) {
		g := authGateway(t, "auth_backoff: {free_failures: 50, delay: 30s}\npacing: {per_source_rate: 1000, per_source_burst: 1000}\n",
			engine.Config{RatePerSource: 1000, BurstPerSource: 1000})
		ts := g.eng.Tunnel()
		guess := func(pw, local string) error {
			cc := clientConfigTo(t, nil, ts.IKEAddr(), ts.NATTAddr().Port(), 0, "aes128-sha256-modp2048", "aes128gcm16")
			cc.Password, cc.LocalIKE, cc.LocalNATT = pw, local, local
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			tn, err := l2tpipsec.Dial(ctx, cc)
			if err == nil {
				_ = tn.Close()
			}
			return err
		}
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		in := 0
		for w := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < 50; i += 10 {
					if guess(fmt.Sprintf("guess-%d", i), "127.0.0.1:0") == nil {
						mu.Lock()
						in++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		guessing := time.Since(t0)
		wait := g.srv.Env().Backoff().CheckSource(netip.MustParseAddr("127.0.0.1"))
		err51 := guess("guess-51", "127.0.0.1:0")
		s0 := time.Now()
		errOK := guess("pw", "127.0.0.77:0")
		ok := time.Since(s0)
		row := AttackRow{Target: "gateway",
			Attack: "PPP password guessing from one source: 50 wrong passwords (10 in parallel), then the 51st (finding 4; TestBackoffSlowsGuesserNotFleet)",
			Bound:  fmt.Sprintf("the 51st waits >= 30 s (auth_backoff delay after free_failures 50); the guessed identity, with the right password, from another source logs in within %v", attackSetupBound),
		}
		row.Measured = fmt.Sprintf("50 guesses in %v, %d logged in; then its source must wait %v; 51st not answered: %v; the guessed identity from another source up in %v",
			guessing.Round(time.Millisecond), in, wait.Round(time.Second), err51 != nil, ok.Round(time.Millisecond))
		if errOK != nil {
			row.Measured += "; right identity failed: " + errOK.Error()
		}
		row.Held = in == 0 && err51 != nil && wait >= 29*time.Second && errOK == nil && ok < attackSetupBound
		rep.attack(row)

		// Tunnels hoarded over one IPsec SA.
		g2 := authGateway(t, "", engine.Config{UnauthTimeout: 3 * time.Second})
		ts2 := g2.eng.Tunnel()
		cc := clientConfigTo(t, nil, ts2.IKEAddr(), ts2.NATTAddr().Port(), 0, "aes128-sha256-modp2048", "aes128gcm16")
		tn, err := dialTunnel(cc)
		row = AttackRow{Target: "gateway",
			Attack: "L2TP tunnels without a session over one IPsec SA (finding 6; TestTunnelCapPerPeer)",
			Bound:  "a peer's 3rd tunnel is refused; a tunnel without an authenticated session is closed after the unauthenticated timeout",
		}
		if err != nil {
			row.Err = err.Error()
			rep.attack(row)
			return
		}
		defer tn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err2 := tn.DialL2TP(ctx)
		ctx3, cancel3 := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel3()
		_, err3 := tn.DialL2TP(ctx3)
		gs := ts2.GuardStats()
		deadline := time.Now().Add(10 * time.Second)
		for gs.TunnelsTimedOut.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		row.Measured = fmt.Sprintf("2nd tunnel accepted: %v; 3rd refused: %v (SCCRQ refused %d); unauthenticated tunnels closed after 3 s: %d",
			err2 == nil, err3 != nil, gs.TunnelsRefused.Load(), gs.TunnelsTimedOut.Load())
		row.Held = err2 == nil && err3 != nil && gs.TunnelsRefused.Load() >= 1 && gs.TunnelsTimedOut.Load() >= 1
		rep.attack(row)
	})
	if err != nil {
		rep.attack(AttackRow{Target: "gateway", Attack: "password guessing and tunnel hoarding", Err: err.Error()})
	} else if msg != "" {
		rep.note("attack-auth: %s", msg)
	}
}

// authGateway is our gateway on loopback with identity s0 (password pw,
// the shared PSK) and extra configuration.
func authGateway(t testing.TB, extra string, ecfg engine.Config) *ourGateway {
	return defaultsGateway(t, "attack-auth.yaml", 1, extra, ecfg)
}
