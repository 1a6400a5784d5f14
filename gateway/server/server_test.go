package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/gateway/status"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

type testSession struct {
	id         uint64
	ident      string
	addr       netip.Addr
	routes     []netip.Prefix
	mu         sync.Mutex
	got        [][]byte
	terminated chan string
}

func newTestSession(ident, addr string, routes ...string) *testSession {
	s := &testSession{id: NewSessionID(), ident: ident, addr: netip.MustParseAddr(addr), terminated: make(chan string, 1)}
	for _, r := range routes {
		s.routes = append(s.routes, netip.MustParsePrefix(r))
	}
	return s
}

func (s *testSession) ID() uint64             { return s.id }
func (s *testSession) Identity() string       { return s.ident }
func (s *testSession) Addr() netip.Addr       { return s.addr }
func (s *testSession) Routes() []netip.Prefix { return s.routes }
func (s *testSession) MTU() int               { return 1400 }
func (s *testSession) WritePacket(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, append([]byte(nil), p...))
	return nil
}
func (s *testSession) Terminate(reason string) {
	select {
	case s.terminated <- reason:
	default:
	}
}
func (s *testSession) OuterAddr() netip.AddrPort { return netip.MustParseAddrPort("198.51.100.7:4500") }
func (s *testSession) Suite() string             { return "aes128gcm16" }
func (s *testSession) Established() time.Time    { return time.Time{} }

func (s *testSession) wasTerminated() bool {
	select {
	case <-s.terminated:
		return true
	default:
		return false
	}
}

type nullHost struct {
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
	once sync.Once
}

func newNullHost() *nullHost { return &nullHost{done: make(chan struct{})} }
func (h *nullHost) WritePacket(p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, append([]byte(nil), p...))
	return nil
}
func (h *nullHost) ReadPacket([]byte) (int, error) { <-h.done; return 0, io.EOF }
func (h *nullHost) MTU() int                       { return 1500 }
func (h *nullHost) Close() error                   { h.once.Do(func() { close(h.done) }); return nil }

const baseConfig = `
listen: {ike_port: 1500, natt_port: 14500}
psk: {shared: s3cret}
pool: {prefix: 10.10.0.0/24}
push_routes: [10.20.0.0/16]
metrics: {listen: "127.0.0.1:0"}
status: {socket: %q}
policies:
  sensors:
    allow:
      - {dst: 10.20.0.10/32, proto: udp, ports: [5683]}
identities:
  - {name: hall7, ppp: {password: p}, address: 10.10.0.7, routes: [10.10.8.0/24], policy: sensors}
  - {name: pump2, ppp: {password: p, methods: [pap, chap]}, routes: [10.10.9.0/24], policy: sensors}
%s`

func parse(t *testing.T, sock, extra string) *config.Config {
	t.Helper()
	c, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(baseConfig, sock, extra)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func udp(src, dst string, sport, dport uint16) []byte {
	return pkttest.UDP(netip.AddrPortFrom(netip.MustParseAddr(src), sport), netip.AddrPortFrom(netip.MustParseAddr(dst), dport), make([]byte, 4))
}

// TestServerLifecycle drives the server with a fake engine: sessions
// register, traffic flows and is counted, metrics and status are served,
// relogin replaces, reload closes only affected sessions, and shutdown
// makes the engine tell every peer.
func TestServerLifecycle(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sock := filepath.Join(t.TempDir(), "gw.sock")
	cfg := parse(t, sock, "")
	host := newNullHost()
	hall7 := newTestSession("hall7", "10.10.0.7", "10.10.8.0/24")
	registered := make(chan *Env, 1)
	var deleted []string
	var dmu sync.Mutex
	eng := EngineFunc(func(ctx context.Context, env *Env) error {
		addr, err := env.AssignAddress("pump2", netip.Addr{})
		if err != nil {
			return err
		}
		pump := newTestSession("pump2", addr.String(), env.Routes("pump2")[0].String())
		for _, s := range []*testSession{hall7, pump} {
			if err := env.Register(s); err != nil {
				return err
			}
		}
		registered <- env
		<-ctx.Done()
		// Shutdown: tell every peer (Delete/StopCCN), then unregister.
		for _, s := range env.Sessions.Sessions() {
			dmu.Lock()
			deleted = append(deleted, s.Identity())
			dmu.Unlock()
			env.Unregister(s, radius.CauseNASReboot)
		}
		return nil
	})
	srv, err := New(cfg, Options{Engine: eng, Host: host, Clock: stacktest.NewClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var env *Env
	select {
	case env = <-registered:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("engine did not register sessions")
	}

	// Address assignment: pump2 got the first pool address after the
	// gateway's own (.1); hall7 keeps its static one.
	pump := env.Sessions.ByIdentity("pump2")
	if pump == nil || pump.Addr() != netip.MustParseAddr("10.10.0.2") {
		t.Fatalf("pump2 address: got %v, want 10.10.0.2", pump)
	}
	if a, _ := env.AssignAddress("hall7", netip.Addr{}); a != netip.MustParseAddr("10.10.0.7") {
		t.Errorf("static address: got %v", a)
	}
	// Local auth helpers.
	if id, err := env.CheckPAP("pump2", "p"); err != nil || id != "pump2" {
		t.Errorf("CheckPAP: %v %v", id, err)
	}
	if _, err := env.CheckPAP("hall7", "p"); err == nil {
		t.Error("CheckPAP accepted a user without pap in methods")
	}

	// Traffic: allowed and denied, counted per identity and by reason.
	if err := env.Router.FromSession(hall7, udp("10.10.8.17", "10.20.0.10", 5683, 5683)); err != nil {
		t.Fatal(err)
	}
	if err := env.Router.FromSession(hall7, udp("10.10.8.17", "10.20.0.11", 5683, 5683)); err == nil {
		t.Error("policy-denied packet forwarded")
	}
	// DHCPINFORM gets the push routes.
	inform := dhcpInform(t)
	if err := env.Router.FromSession(hall7, inform); err != nil {
		t.Fatalf("DHCPINFORM: %v", err)
	}
	hall7.mu.Lock()
	nReplies := len(hall7.got)
	hall7.mu.Unlock()
	if nReplies != 1 {
		t.Errorf("DHCPACK replies: got %d, want 1", nReplies)
	}

	// Metrics over HTTP.
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"fleetgate_sessions_active 2", `fleetgate_dataplane_drops_total{reason="policy"} 1`,
		`fleetgate_identity_rx_packets_total{identity="hall7"} 3`, `fleetgate_session_setups_total{identity="pump2"} 1`, "fleetgate_dhcpinform_answered_total 1",
		`fleetgate_admission_rejected_total{limit="global"} 0`, "# TYPE go_goroutines gauge", "# TYPE process_resident_memory_bytes gauge",
		"# TYPE fleetgate_session_setup_duration_seconds histogram"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The exposition passes Prometheus' own linter.
	pt := testenv.RequireBinary(t, "promtool")
	check := exec.Command(pt, "check", "metrics")
	check.Stdin = strings.NewReader(string(body))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	// Status over the unix socket.
	rep, err := status.Fetch(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sessions) != 2 || rep.Sessions[0].Identity != "hall7" || rep.Sessions[0].Outer != "198.51.100.7:4500" || rep.Sessions[0].RxPackets != 3 || rep.Engine != "running" {
		t.Errorf("status: %+v", rep)
	}

	// Relogin of hall7 replaces the old session.
	hall7b := newTestSession("hall7", "10.10.0.7", "10.10.8.0/24")
	if err := env.Register(hall7b); err != nil {
		t.Fatal(err)
	}
	if !hall7.wasTerminated() || env.Sessions.ByIdentity("hall7") != hall7b {
		t.Error("relogin did not replace and terminate the old session")
	}

	// Reload: a new identity changes nothing for running sessions.
	ch, err := srv.Reload(parse(t, sock, "  - {name: newsite, ppp: {password: n}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Added) != 1 || hall7b.wasTerminated() {
		t.Errorf("adding an identity: changes %+v, hall7 terminated %v", ch, hall7b.wasTerminated())
	}
	if env.Config().Identity("newsite") == nil {
		t.Error("new identity not visible to the engine after reload")
	}
	// Reload: hall7's policy target changes -> only hall7 is closed.
	changed := strings.Replace(fmt.Sprintf(baseConfig, sock, ""), "address: 10.10.0.7, routes: [10.10.8.0/24], policy: sensors", "address: 10.10.0.7, routes: [10.10.8.0/24]", 1)
	nc, err := config.Parse("gw.yaml", []byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Reload(nc); err != nil {
		t.Fatal(err)
	}
	if !hall7b.wasTerminated() {
		t.Error("changed identity's session not terminated on reload")
	}
	if env.Sessions.ByIdentity("hall7") != nil {
		t.Error("changed identity's session still in the table (routes not withdrawn) after reload")
	}
	if pt := env.Sessions.ByIdentity("pump2").(*testSession); pt.wasTerminated() {
		t.Error("unaffected session terminated on reload")
	}

	// Shutdown: the engine is told, every peer gets a Delete.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	dmu.Lock()
	defer dmu.Unlock()
	if len(deleted) != 1 || deleted[0] != "pump2" {
		t.Errorf("peers told at shutdown: got %v, want pump2 (hall7 was closed by the reload)", deleted)
	}
	if srv.Env().Sessions.Len() != 0 {
		t.Error("sessions left after shutdown")
	}
}

func dhcpInform(t *testing.T) []byte {
	t.Helper()
	m := make([]byte, 240)
	m[0], m[1], m[2] = 1, 1, 6
	copy(m[12:16], []byte{10, 10, 0, 7})
	binary.BigEndian.PutUint32(m[236:], 0x63825363)
	m = append(m, 53, 1, 8, 255)
	return pkttest.UDP(netip.MustParseAddrPort("10.10.0.7:68"), netip.MustParseAddrPort("255.255.255.255:67"), m)
}

var _ dataplane.Host = (*nullHost)(nil)
