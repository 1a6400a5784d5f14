package server

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestAccountingThroughOutage: no RADIUS server answers; local identities
// still register (set-up never waits for RADIUS) and their Start/Stop
// records go to the spool file; the gateway is restarted; once a
// FreeRADIUS answers, every record arrives exactly once (counted in its
// detail file), with Acct-Delay-Time.
func TestAccountingThroughOutage(t *testing.T) {
	port := realpeer.FreePort(t)
	spool := filepath.Join(t.TempDir(), "acct.db")
	y := fmt.Sprintf(`psk: {shared: x}
policy: {default: allow}
metrics: {listen: "off"}
identities:
  - {name: hall7, ppp: {password: p}}
  - {name: pump2, ppp: {password: p}}
  - {name: ops, ppp: {password: p}}
radius: {auth: "127.0.0.1:%d", acct: "127.0.0.1:%d", secret: fleetgate-test-secret, nas_identifier: gw-t,
  timeout: 300ms, dead_time: 1s, acct_spool: %q}
`, port, port+1, spool)
	run := func(body func(env *Env, srv *Server)) {
		cfg, err := config.Parse("gw.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(cfg, Options{Host: newNullHost(), Clock: stacktest.NewClock()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		waitFor(t, func() bool { return srv.Host() != nil })
		body(srv.Env(), srv)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run(func(env *Env, srv *Server) {
		start := time.Now()
		for _, id := range []string{"hall7", "pump2", "ops"} {
			if _, err := env.CheckPAP(id, "p"); err == nil {
				t.Fatalf("%s: PAP not in its methods, yet accepted", id)
			}
			a, err := env.AssignAddress(id, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			s := newTestSession(id, a.String())
			if err := env.Register(s); err != nil {
				t.Fatal(err)
			}
			env.Unregister(s, radius.CauseUserRequest)
		}
		t.Logf("3 sessions registered and ended with no RADIUS server in %v", time.Since(start).Round(time.Millisecond))
		waitFor(t, func() bool { return srv.fleet.spool.Stats.Submitted.Load() == 6 })
		if st := &srv.fleet.spool.Stats; st.Delivered.Load() != 0 || st.Queued.Load() != 6 {
			t.Fatalf("first run: delivered %d, queued %d; want 0 and 6", st.Delivered.Load(), st.Queued.Load())
		}
	})
	time.Sleep(1100 * time.Millisecond) // so that Acct-Delay-Time is at least 1 s
	// "Restart" with a server back on the configured ports.
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Port: port})
	run(func(env *Env, srv *Server) {
		// The spool file from before the restart is delivered.
		st := &srv.fleet.spool.Stats
		waitFor(t, func() bool { return st.Delivered.Load() == 6 && st.Queued.Load() == 0 })
	})
	d := fr.Detail()
	for _, st := range []string{"Start", "Stop"} {
		if n := strings.Count(d, "Acct-Status-Type = "+st); n != 3 {
			t.Errorf("%d %s records in the detail file, want 3", n, st)
		}
	}
	ids := regexp.MustCompile(`Acct-Session-Id = "(gw-t-[0-9a-f]{8}-\d+)"`).FindAllStringSubmatch(d, -1)
	per := map[string]int{}
	for _, m := range ids {
		per[m[1]]++
	}
	if len(per) != 3 {
		t.Errorf("sessions in the detail file: %v, want 3 with Start and Stop each", per)
	}
	for id, n := range per {
		if n != 2 {
			t.Errorf("%s: %d records, want 2", id, n)
		}
	}
	if n := len(regexp.MustCompile(`Acct-Delay-Time = [1-9]`).FindAllString(d, -1)); n != 6 {
		t.Errorf("%d records with Acct-Delay-Time > 0, want 6", n)
	}
	t.Logf("after the restart FreeRADIUS got %d records for %d sessions, each once", len(ids), len(per))
}
