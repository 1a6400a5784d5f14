package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

const bgpConfig = `bgp:
  local_as: 65010
  router_id: 192.0.2.1
  communities: ["65010:7"]
  neighbors:
    - {address: 192.0.2.2, as: 65000, hold_time: 9s, connect_retry: 1s}
    - {address: 192.0.2.9, as: 65000, connect_retry: 1s}   # nobody there
radius:
  auth: 127.0.0.1:1812   # nobody there: local identities still log in
  secret: radius-secret
  dae_listen: 127.0.0.1:3799
  dae_clients: [127.0.0.1]
`

// TestSessionRoutesInBird runs the server in namespace a with a bgp
// section; a real bird2 in b is its neighbour, 192.0.2.9 is a neighbour
// that does not exist. A session coming up puts its /32 and framed route
// into bird's table via 192.0.2.1; a relogin keeps them; the session's end
// withdraws them; a reload that changes an identity's routes withdraws its
// session's prefixes before the engine has torn it down; shutdown
// withdraws the rest. Status and metrics show the neighbours. An
// operator's `radclient disconnect` ends exactly the named session, and
// its routes leave bird.
func TestSessionRoutesInBird(t *testing.T) {
	hosts, child := netns.InHost(t, "a", func() *netns.Topology { return netns.Pair(t) })
	if !child {
		return
	}
	bird := realpeer.StartBird(t, hosts["b"], realpeer.BirdConfig{RouterID: "192.0.2.2", AS: 65000,
		Neighbors: []realpeer.BirdNeighbor{{Name: "peer_gw", Addr: "192.0.2.1", AS: 65010, HoldTime: 9}}})

	sock := filepath.Join(t.TempDir(), "gw.sock")
	cfg := parse(t, sock, bgpConfig)
	envc := make(chan *Env, 1)
	eng := EngineFunc(func(ctx context.Context, env *Env) error {
		envc <- env
		<-ctx.Done()
		for _, s := range env.Sessions.Sessions() {
			env.Unregister(s, radius.CauseNASReboot)
		}
		return nil
	})
	srv, err := New(cfg, Options{Engine: eng, Host: newNullHost(), Clock: stacktest.NewClock()})
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
	env := <-envc

	const via = "192.0.2.1"
	hall7 := newTestSession("hall7", "10.10.0.7", "10.10.8.0/24")
	start := time.Now()
	if err := env.Register(hall7); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Register took %v with a dead neighbour configured", d)
	}
	for _, p := range []string{"10.10.8.0/24", "10.10.0.7/32"} {
		if !bird.WaitRoute(p, via, true, 30*time.Second) {
			t.Fatalf("bird lacks %s via %s after the session came up:\n%s", p, via, bird.Routes())
		}
	}
	t.Logf("session up → bird has 10.10.8.0/24 via %s after %v", via, time.Since(start).Round(time.Millisecond))

	r := srv.Report()
	if r.RADIUS == nil || r.RADIUS.DAE != "127.0.0.1:3799" || len(r.RADIUS.Servers) != 1 {
		t.Errorf("status radius: %+v", r.RADIUS)
	}
	if r.BGP == nil || r.BGP.Announced != 2 || len(r.BGP.Neighbors) != 2 || r.BGP.Neighbors[0].State != "established" || r.BGP.Neighbors[1].State == "established" {
		t.Errorf("status bgp: %+v", r.BGP)
	}
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`fleetgate_bgp_neighbor_up{neighbor="192.0.2.2"} 1`, `fleetgate_bgp_neighbor_up{neighbor="192.0.2.9"} 0`, "fleetgate_bgp_prefixes_announced 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Relogin: the new session replaces the old; the old one's teardown
	// must not withdraw what the new one announced.
	again := newTestSession("hall7", "10.10.0.7", "10.10.8.0/24")
	if err := env.Register(again); err != nil {
		t.Fatal(err)
	}
	env.Unregister(hall7, radius.CauseAdminReset)
	pump := newTestSession("pump2", "10.10.0.2", "10.10.9.0/24")
	if err := env.Register(pump); err != nil {
		t.Fatal(err)
	}
	if !bird.WaitRoute("10.10.9.0/24", via, true, 30*time.Second) {
		t.Fatalf("pump2's route missing:\n%s", bird.Routes())
	}
	if !bird.HasRoute("10.10.8.0/24", via) {
		t.Fatalf("the relogin's old session withdrew the new one's route:\n%s", bird.Routes())
	}

	// radclient disconnect: pump2's session ends (Terminate) and its
	// routes are withdrawn; hall7's stay.
	radclient := testenv.RequireBinary(t, "radclient")
	cmd := exec.Command(radclient, "-t", "2", "-r", "1", "-x", srv.DAEAddr(), "disconnect", "radius-secret")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("Acct-Session-Id = %q\n", srv.acctSessionID(pump)))
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "Disconnect-ACK") {
		t.Fatalf("radclient disconnect:\n%s", out)
	}
	if !pump.wasTerminated() {
		t.Error("Disconnect-ACK but pump2's session was not terminated")
	}
	if again.wasTerminated() {
		t.Error("the disconnect ended hall7's session too")
	}
	if !bird.WaitRoute("10.10.9.0/24", via, false, 30*time.Second) {
		t.Fatalf("pump2's route stays after radclient disconnect:\n%s", bird.Routes())
	}
	if !bird.HasRoute("10.10.8.0/24", via) {
		t.Fatalf("hall7's route went with pump2's disconnect:\n%s", bird.Routes())
	}
	t.Logf("radclient disconnect → Disconnect-ACK, 10.10.9.0/24 withdrawn from bird")
	env.Unregister(pump, radius.CauseAdminReset) // the engine's part of the teardown
	pump = newTestSession("pump2", "10.10.0.2", "10.10.9.0/24")
	if err := env.Register(pump); err != nil {
		t.Fatal(err)
	}
	if !bird.WaitRoute("10.10.9.0/24", via, true, 30*time.Second) {
		t.Fatalf("pump2's route missing after it logged in again:\n%s", bird.Routes())
	}

	// Session end → withdrawn.
	env.Unregister(again, radius.CauseUserRequest)
	if !bird.WaitRoute("10.10.8.0/24", via, false, 30*time.Second) || !bird.WaitRoute("10.10.0.7/32", via, false, 5*time.Second) {
		t.Fatalf("hall7's prefixes stay after its session ended:\n%s", bird.Routes())
	}

	// SIGHUP that moves pump2's framed route: withdrawn at once, before
	// the engine tears the session down.
	// The same reload changes the community: later announcements carry it.
	next, err := config.Parse("gw.yaml", []byte(strings.Replace(strings.Replace(baseConfig, "%q", `"`+sock+`"`, 1), "%s", strings.Replace(bgpConfig, `"65010:7"`, `"65010:8"`, 1), 1)))
	if err != nil {
		t.Fatal(err)
	}
	next.Identity("pump2").RoutePrefixes = nil
	next.Identity("pump2").Routes = nil
	if _, err := srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	if !pump.wasTerminated() {
		t.Error("reload did not terminate pump2")
	}
	if !bird.WaitRoute("10.10.9.0/24", via, false, 30*time.Second) {
		t.Fatalf("pump2's removed route stays after the reload:\n%s", bird.Routes())
	}

	// Graceful shutdown withdraws the rest: a new session, then stop.
	ops := newTestSession("hall7", "10.10.0.7", "10.10.8.0/24")
	if err := env.Register(ops); err != nil {
		t.Fatal(err)
	}
	if !bird.WaitRoute("10.10.8.0/24", via, true, 30*time.Second) {
		t.Fatalf("route missing before shutdown:\n%s", bird.Routes())
	}
	if all, _ := bird.Command("show route 10.10.8.0/24 all"); !strings.Contains(all, "(65010,8)") {
		t.Errorf("the reloaded community (65010,8) is not on the route:\n%s", all)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if !bird.WaitRoute("10.10.8.0/24", via, false, 30*time.Second) {
		t.Fatalf("routes stay after the gateway stopped:\n%s", bird.Routes())
	}
}
