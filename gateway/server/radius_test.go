package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

type radiusSession struct{ *testSession }

func (radiusSession) PPPUser() string { return "site-r" }
func (radiusSession) Class() []byte   { return []byte("tenant-a") }

// TestAccountingThroughServer registers a RADIUS-authenticated session,
// moves traffic, and checks FreeRADIUS's detail file for Start, Interim and
// Stop with this session's byte and packet counts.
func TestAccountingThroughServer(t *testing.T) {
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{{Name: "site-r", Password: "pw", Reply: []string{"Framed-IP-Address = 10.10.0.50"}}}})
	clk := stacktest.NewClock()
	y := fmt.Sprintf("psk: {shared: x}\npolicy: {default: allow}\nmetrics: {listen: \"off\"}\nradius: {auth: %q, acct: %q, secret: %q, nas_identifier: gw-t, interim_interval: 1m}\n",
		fr.Auth, fr.Acct, fr.Secret)
	cfg, err := config.Parse("gw.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	env := srv.Env()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// Run opens the data plane host: traffic before that is dropped (it
	// used to be hidden by a synchronous accounting Start in Register).
	waitFor(t, func() bool { return srv.Host() != nil })

	res, err := env.RADIUS.Authenticate(context.Background(), radius.Request{Method: radius.MethodPAP, User: "site-r", Password: "pw"})
	if err != nil || !res.Accept {
		t.Fatalf("auth: %+v %v", res, err)
	}
	addr, err := env.AssignAddress("site-r", res.FramedIP)
	if err != nil || addr.String() != "10.10.0.50" {
		t.Fatalf("Framed-IP-Address not honoured: %v %v", addr, err)
	}
	sess := radiusSession{newTestSession("site-r", addr.String())}
	if err := env.Register(sess); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := env.Router.FromSession(sess, udp("10.10.0.50", "10.20.0.10", 5683, 5683)); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Router.FromHost(udp("10.20.0.10", "10.10.0.50", 5683, 5683)); err != nil {
		t.Fatal(err)
	}
	// Interim after the interval (fake clock), then Stop.
	waitFor(t, func() bool { return strings.Contains(fr.Detail(), "Acct-Status-Type = Start") })
	clk.Advance(time.Minute)
	waitFor(t, func() bool { return strings.Contains(fr.Detail(), "Acct-Status-Type = Interim-Update") })
	env.Unregister(sess, radius.CauseLostCarrier)
	// Accounting goes through the spool: the Stop is queued, not waited for.
	waitFor(t, func() bool { return strings.Contains(fr.Detail(), "Acct-Status-Type = Stop") })
	d := fr.Detail()
	for _, want := range []string{`User-Name = "site-r"`, "Framed-IP-Address = 10.10.0.50", "Acct-Status-Type = Stop",
		"Acct-Input-Octets = 96", "Acct-Input-Packets = 3", "Acct-Output-Octets = 32", "Acct-Output-Packets = 1",
		"Acct-Terminate-Cause = Lost-Carrier", `Calling-Station-Id = "198.51.100.7:4500"`, "Class = 0x74656e616e742d61"} {
		if !strings.Contains(d, want) {
			t.Errorf("detail lacks %q:\n%s", want, d)
		}
	}
	if _, err := filepath.Abs(fr.Dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d, `Acct-Session-Id = "gw-t-`+srv.fleet.bootID+`-`) {
		t.Errorf("Acct-Session-Id is not <nas>-<boot id>-<n>:\n%s", d)
	}
}

// waitFor polls cond: the RADIUS round trip happens on another goroutine
// and the detail file is the only observable.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
