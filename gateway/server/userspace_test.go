package server

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/internal/pkttest"
)

// TestUserspaceMode runs the server without root: a central service lives
// in the process on 10.20.0.10 and answers a session.
func TestUserspaceMode(t *testing.T) {
	cfg, err := config.Parse("gw.yaml", []byte("psk: {shared: x}\npolicy: {default: allow}\nmetrics: {listen: \"off\"}\n"+
		"dataplane: {mode: userspace, addresses: [10.20.0.10/32]}\nidentities:\n  - {name: hall7, ppp: {password: p}, address: 10.10.0.7}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *Env, 1)
	eng := EngineFunc(func(ctx context.Context, env *Env) error {
		ready <- env
		<-ctx.Done()
		return nil
	})
	srv, err := New(cfg, Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	env := <-ready
	us, ok := srv.Host().(*dataplane.Userspace)
	if !ok {
		t.Fatalf("host is %T, want *dataplane.Userspace", srv.Host())
	}
	pc, err := us.Stack().ListenUDP(netip.MustParseAddrPort("10.20.0.10:7"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	sess := newTestSession("hall7", "10.10.0.7")
	if err := env.Register(sess); err != nil {
		t.Fatal(err)
	}
	if err := env.Router.FromSession(sess, udp("10.10.0.7", "10.20.0.10", 40000, 7)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sess.mu.Lock()
		n := len(sess.got)
		var first []byte
		if n > 0 {
			first = sess.got[0]
		}
		sess.mu.Unlock()
		if n > 0 {
			if src := pkttest.Src(first); src != netip.MustParseAddr("10.20.0.10") {
				t.Errorf("reply from %v, want 10.20.0.10", src)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reply from the in-process service")
		}
		time.Sleep(10 * time.Millisecond) // the reply crosses the netstack's goroutines
	}
}
