package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestReloadAppliesProposals: proposals: is applied by a reload (it was
// read once at start), and a refusal is counted under its own phase in
// /metrics: Main Mode as ike_main, Quick Mode as ike_quick.
func TestReloadAppliesProposals(t *testing.T) {
	g := startGateway(t, parseConfig(t, "proposals: {ike: [aes256-sha256-modp2048], esp: [aes256gcm16]}\n"), engine.Config{})
	ecp := g.clientConfig("hall7", "pw7")
	ecp.IKEProposals, ecp.ESPProposals = "aes128-sha256-ecp256", "aes128gcm16"
	gcm128 := g.clientConfig("hall7", "pw7")
	gcm128.IKEProposals, gcm128.ESPProposals = "aes256-sha256-modp2048", "aes128gcm16"

	mustFail := func(cc l2tpipsec.ClientConfig, phase l2tpipsec.Phase) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tn, err := l2tpipsec.Dial(ctx, cc)
		if err == nil {
			_ = tn.Close()
			t.Fatalf("%s/%s accepted before the reload", cc.IKEProposals, cc.ESPProposals)
		}
		if got := l2tpipsec.PhaseOf(err); got != phase {
			t.Fatalf("%s/%s: failed in %v (%v), want %v", cc.IKEProposals, cc.ESPProposals, got, err, phase)
		}
	}
	mustFail(ecp, l2tpipsec.PhaseIKE)
	mustFail(gcm128, l2tpipsec.PhaseQuickMode)
	waitFor(t, "both refusals in /metrics", func() bool {
		expo := g.scrape(t)
		return strings.Contains(expo, `fleetgate_session_setup_failures_total{phase="ike_main",reason="no_proposal_chosen"} 1`) &&
			strings.Contains(expo, `fleetgate_session_setup_failures_total{phase="ike_quick",reason="no_proposal_chosen"} 1`)
	})

	ch, err := g.srv.Reload(parseConfig(t, "proposals: {ike: [aes256-sha256-modp2048, aes128-sha256-ecp256], esp: [aes256gcm16, aes128gcm16]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.RestartNeeded) != 0 {
		t.Fatalf("reload of proposals says restart needed: %v", ch.RestartNeeded)
	}
	// Both offers now pass, with no restart.
	tn, _ := dial(t, ecp)
	_ = tn.Close()
	dial(t, gcm128)
}

// TestReloadAppliesMTU: mtu: follows a reload (it was captured at start):
// a session set up after it negotiates the new PPP MRU and the gateway
// clamps to the new MTU.
func TestReloadAppliesMTU(t *testing.T) {
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	tn, _ := dial(t, g.clientConfig("hall7", "pw7"))
	before := tn.MTU()
	_ = tn.Close()
	waitFor(t, "hall7 gone", func() bool { return g.srv.Env().Sessions.Len() == 0 })
	if _, err := g.srv.Reload(parseConfig(t, "mtu: 1280\n")); err != nil {
		t.Fatal(err)
	}
	tn, _ = dial(t, g.clientConfig("hall7", "pw7"))
	waitFor(t, "hall7 registered", func() bool { return g.srv.Env().Sessions.Lookup(tn.LocalAddr()) != nil })
	if got := tn.MTU(); got != 1280 || got == before {
		t.Errorf("PPP MRU the gateway offered after the reload: %d (before %d), want 1280", got, before)
	}
	if got := g.srv.Env().Sessions.Lookup(tn.LocalAddr()).MTU(); got > 1280 {
		t.Errorf("session MTU after the reload: %d, want <= 1280", got)
	}
}
