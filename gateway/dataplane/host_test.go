package dataplane

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// waitSession waits until the fake session has received n packets.
type notifySession struct {
	*fakeSession
	ch chan []byte
}

func (n *notifySession) WritePacket(p []byte) error {
	n.ch <- append([]byte(nil), p...)
	return nil
}

func newRouterFor(t *testing.T, s route.Session) *Router {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte("psk: {shared: x}\npolicy: {default: allow}\nidentities:\n  - {name: hall7, ppp: {password: p}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tb := route.NewTable()
	if _, err := tb.Add(s, true); err != nil {
		t.Fatal(err)
	}
	return New(Config{Sessions: tb, Policies: policy.Compile(c), LocalAddr: netip.MustParseAddr("10.10.0.1"), Clock: stacktest.NewClock()})
}

// TestUserspaceHostEcho runs a UDP echo service on 10.20.0.10 inside the
// userspace stack and sends it a packet from a session.
func TestUserspaceHostEcho(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sess := &notifySession{fakeSession: &fakeSession{id: 1, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"), mtu: 1400}, ch: make(chan []byte, 4)}
	r := newRouterFor(t, sess)
	u, err := NewUserspace(UserspaceConfig{Addrs: []netip.Prefix{netip.MustParsePrefix("10.20.0.10/32")}})
	if err != nil {
		t.Fatal(err)
	}
	r.SetHost(u)
	pc, err := u.Stack().ListenUDP(netip.MustParseAddrPort("10.20.0.10:7"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = r.RunHost(ctx) }()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		cancel()
		pc.Close()
		u.Close()
		wg.Wait()
	})
	if err := r.FromSession(sess, pkttest.UDP(netip.MustParseAddrPort("10.10.0.7:40000"), netip.MustParseAddrPort("10.20.0.10:7"), []byte("ping"))); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-sess.ch:
		h := header.IPv4(p)
		if src4(h) != netip.MustParseAddr("10.20.0.10") || dst4(h) != netip.MustParseAddr("10.10.0.7") || string(h.Payload()[8:]) != "ping" {
			t.Errorf("echo: got %v -> %v %q", src4(h), dst4(h), h.Payload()[8:])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo from the userspace stack")
	}
}

func TestCheckIPForward(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		content string
		off     bool
	}{{"1\n", false}, {"0\n", true}} {
		p := filepath.Join(dir, "ip_forward")
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		err := CheckIPForward(p)
		if (err == ErrForwardingOff) != tt.off {
			t.Errorf("content %q: got %v", tt.content, err)
		}
	}
	if err := CheckIPForward(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: got nil")
	}
}
