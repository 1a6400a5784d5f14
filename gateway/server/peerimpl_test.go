package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

type peerSession struct {
	*testSession
	impl string
}

func (p peerSession) PeerImplementation() string { return p.impl }

// TestSessionPeerImplementation: the implementation a session reports is
// in the "session established" line, the sessions view and the bounded
// fleetgate_session_setups_by_peer_total label; a value outside
// peerid.Kinds is logged and counted as unknown.
func TestSessionPeerImplementation(t *testing.T) {
	cfg := parse(t, filepath.Join(t.TempDir(), "gw.sock"), "")
	hall7 := peerSession{newTestSession("hall7", "10.10.0.7", "10.10.8.0/24"), "windows"}
	pump := peerSession{newTestSession("pump2", "10.10.0.9", "10.10.9.0/24"), "evil\"label"}
	registered := make(chan struct{})
	eng := EngineFunc(func(ctx context.Context, env *Env) error {
		for _, s := range []peerSession{hall7, pump} {
			if err := env.Register(s); err != nil {
				return err
			}
		}
		close(registered)
		<-ctx.Done()
		return nil
	})
	logs := &lockedBuffer{}
	srv, err := New(cfg, Options{Engine: eng, Host: newNullHost(), Clock: stacktest.NewClock(), Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-registered:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine did not register sessions")
	}
	if logs.count("peer_impl=windows") != 1 || logs.count("peer_impl=unknown") != 1 || logs.count("evil") != 0 {
		t.Errorf("session established lines:\n%s", logs.b.String())
	}
	got := map[string]string{}
	for _, s := range srv.SessionsView().Sessions {
		got[s.Identity] = s.Peer
	}
	if got["hall7"] != "windows" {
		t.Errorf("sessions view peers: %v", got)
	}
	mfs, err := srv.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "fleetgate_session_setups_by_peer_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			counted[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(counted) != 2 || counted["windows"] != 1 || counted["unknown"] != 1 {
		t.Errorf("setups by peer: %v, want windows 1, unknown 1", counted)
	}
}
