package engine_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

const testPSK = "loopback-psk"

// gwYAML is a userspace-mode gateway with one in-process central service
// (10.20.0.10) that sensors may reach by UDP 7 and ICMP; 10.20.0.11 is
// denied by policy.
const gwYAML = `
psk: {shared: %s}
pool: {prefix: %s}
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [10.20.0.10/32, 10.20.0.11/32]}
policies:
  sensors:
    allow:
      - {dst: 10.20.0.10/32, proto: udp, ports: [7]}
      - {dst: 10.20.0.10/32, proto: icmp}
identities:
  - {name: hall7, ppp: {password: pw7}, routes: [10.10.8.0/24], policy: sensors}
%s`

func parseConfig(t testing.TB, extra string) *config.Config {
	t.Helper()
	return parseConfigPool(t, "10.10.0.0/24", extra)
}

func parseConfigPool(t testing.TB, pool, extra string) *config.Config {
	t.Helper()
	c, err := config.Parse("gw.yaml", fmt.Appendf(nil, gwYAML, testPSK, pool, extra))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// scrape returns the gateway's /metrics exposition.
func (g *gateway) scrape(t testing.TB) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g.srv.Metrics(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: HTTP %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// promtoolCheck runs `promtool check metrics` on an exposition.
func promtoolCheck(t testing.TB, expo string) {
	t.Helper()
	cmd := exec.Command(testenv.RequireBinary(t, "promtool"), "check", "metrics")
	cmd.Stdin = strings.NewReader(expo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// gateway is a running server.Server with the engine on loopback sockets.
type gateway struct {
	srv    *server.Server
	eng    *engine.Engine
	cancel context.CancelFunc
	done   chan error
}

func udpConn(t testing.TB) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startGateway runs the daemon core with the engine on ephemeral loopback
// ports; ecfg's sockets are filled in unless set.
func startGateway(t testing.TB, cfg *config.Config, ecfg engine.Config) *gateway {
	t.Helper()
	if ecfg.IKEConn == nil {
		ecfg.IKEConn, ecfg.NATTConn = udpConn(t), udpConn(t)
	}
	eng := engine.New(ecfg)
	srv, err := server.New(cfg, server.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{srv: srv, eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	t.Cleanup(g.stop)
	select {
	case <-eng.Ready():
	case err := <-g.done:
		t.Fatalf("gateway stopped before the engine was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready after 10s")
	}
	return g
}

// stop cancels the daemon (SIGTERM) and waits for Run to return.
func (g *gateway) stop() {
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		panic("gateway did not stop within 20s")
	}
	g.done <- nil // later stops return at once
}

func (g *gateway) clientConfig(user, pw string) l2tpipsec.ClientConfig {
	ts := g.eng.Tunnel()
	return l2tpipsec.ClientConfig{
		Gateway: ts.IKEAddr().String(), NATTPort: ts.NATTAddr().Port(),
		LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
		PSK:      []byte(testPSK),
		LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(user + ".sites.example")},
		Username: user, Password: pw,
		IKEOptions: l2tpipsec.IKEOptions{ESPProposals: "aes128gcm16"},
	}
}

func dial(t testing.TB, cc l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, chan []byte) {
	t.Helper()
	tn, got := dialNoClose(t, cc)
	t.Cleanup(func() { _ = tn.Close() })
	return tn, got
}

// dialNoClose dials without registering a graceful Close.
func dialNoClose(t testing.TB, cc l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, chan []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := l2tpipsec.Dial(ctx, cc)
	if err != nil {
		t.Fatalf("dial as %s: %v (phase %v)", cc.Username, err, l2tpipsec.PhaseOf(err))
	}
	got := make(chan []byte, 64)
	tn.SetPacketHandler(func(p []byte) {
		select {
		case got <- append([]byte(nil), p...):
		default:
		}
	})
	return tn, got
}

// await returns the first packet from got that match accepts.
func await(t testing.TB, got <-chan []byte, what string, match func(header.IPv4) bool) header.IPv4 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-got:
			if h := header.IPv4(p); h.IsValid(len(p)) && match(h) {
				return h
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

// waitFor polls cond (state owned by other goroutines of the daemon, e.g.
// the session table after a teardown) until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errTimeout = errors.New("timeout")

func doneWithin(ch <-chan struct{}, d time.Duration) error {
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		return errTimeout
	}
}

// udpEcho runs a UDP echo server at at on the gateway's userspace central
// stack until the test ends.
func (g *gateway) udpEcho(t testing.TB, at netip.AddrPort) {
	t.Helper()
	us, ok := g.srv.Host().(*dataplane.Userspace)
	if !ok {
		t.Fatalf("host is %T, want *dataplane.Userspace", g.srv.Host())
	}
	echo, err := us.Stack().ListenUDP(at)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { echo.Close(); <-done })
}
