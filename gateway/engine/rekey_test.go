package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestRekeyMetricsByKind: with short lifetimes on a fake clock, a session
// through the gateway rekeys its IPsec SAs and its IKE SA; /metrics counts
// them apart (kind="ipsec", kind="ike") and the figures add up to the IKE
// engine's own rekey counter.
func TestRekeyMetricsByKind(t *testing.T) {
	clk := stacktest.NewClock()
	// In IKEv1 the initiator (the client) rekeys phase 1; the gateway
	// counts the client's new Main Mode without INITIAL-CONTACT as a rekey.
	short := l2tpipsec.IKEOptions{IPsecLifetime: 2 * time.Minute, IKELifetime: 4 * time.Minute, RekeyMargin: 30 * time.Second}
	eng := engine.New(engine.Config{IKEConn: udpConn(t), NATTConn: udpConn(t), IKE: short, Clock: clk})
	srv, err := server.New(parseConfig(t, ""), server.Options{Engine: eng, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{srv: srv, eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	t.Cleanup(g.stop)
	<-eng.Ready()
	cc := g.clientConfig("hall7", "pw7")
	cc.IKEOptions.IPsecLifetime, cc.IKEOptions.IKELifetime, cc.IKEOptions.RekeyMargin = short.IPsecLifetime, short.IKELifetime, short.RekeyMargin
	cc.Clock = clk
	tn, _ := dial(t, cc)
	waitFor(t, "hall7 registered", func() bool { return srv.Env().Sessions.Len() == 1 })
	// Five minutes of fake time in small steps, each giving the stacks a
	// moment of real time for the exchanges.
	for range 5 * 60 * 10 {
		clk.Advance(100 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	st := eng.Tunnel().Stats().IKE
	all, child := st.Rekeys.Load(), st.ChildRekeys.Load()
	if child == 0 || all-child == 0 {
		t.Fatalf("rekeys at the gateway: %d in all, %d IPsec: want both kinds", all, child)
	}
	select {
	case <-tn.Done():
		t.Fatalf("session ended during rekeys: %v", tn.Err())
	default:
	}
	// The status page's sessions view counts the session's own IPsec SA
	// rekeys (its peer is the only one here).
	if v := srv.SessionsView(); len(v.Sessions) != 1 || v.Sessions[0].Rekeys < 1 || v.Sessions[0].Rekeys > int64(child) {
		t.Errorf("sessions view %+v: want one session with 1..%d rekeys", v.Sessions, child)
	}
	want := []string{fmt.Sprintf(`fleetgate_rekeys_total{kind="ike"} %d`, all-child), fmt.Sprintf(`fleetgate_rekeys_total{kind="ipsec"} %d`, child)}
	// The counters reach the metrics once a (fake) second.
	var expo string
	for range 50 {
		clk.Advance(time.Second)
		time.Sleep(2 * time.Millisecond)
		if expo = g.scrape(t); strings.Contains(expo, want[0]) && strings.Contains(expo, want[1]) {
			break
		}
	}
	for _, w := range want {
		if !strings.Contains(expo, w) {
			t.Errorf("metrics lack %s:\n%s", w, grepLines(expo, "rekeys"))
		}
	}
	t.Logf("gateway rekeys: %d IKE SA, %d IPsec SA", all-child, child)
}
