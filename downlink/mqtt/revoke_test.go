package mqtt

import (
	"context"
	"crypto/x509"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// switchAuth is StaticAuth that can stop accepting sensor-1 (as the
// registry does once the endpoint is removed).
type switchAuth struct {
	StaticAuth
	off atomic.Bool
}

func (a *switchAuth) Password(u string, p []byte) (string, bool) {
	if a.off.Load() && u == "sensor-1" {
		return "", false
	}
	return a.StaticAuth.Password(u, p)
}

func (a *switchAuth) Certificate(c *x509.Certificate) (string, bool) { return "", false }

// TestRevokeDisconnectsAndForgets: Revoke cuts a connected device before
// it returns (< 1 s; mosquitto_sub's reconnect is refused and it exits), deletes its persistent session (client,
// subscription, queued command; also in the session DB after a restart)
// and refuses its old credentials; another endpoint keeps its session.
func TestRevokeDisconnectsAndForgets(t *testing.T) {
	testenv.RequireBinary(t, "mosquitto_sub")
	auth := &switchAuth{StaticAuth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1", "sensor-2": "pw2"}}}
	db := t.TempDir() + "/sessions.db"
	tb := startBroker(t, func(c *Config) { c.Auth = auth; c.SessionDB = db })
	// sensor-2 subscribes persistently and sleeps; sensor-1 stays connected.
	if out, err := tb.mosq(t, "mosquitto_sub", "-c", "-q", "1", "-u", "sensor-2", "-P", "pw2", "-i", "sensor-2", "-t", "cmd/#", "-C", "1", "-W", "1"); err != nil && !strings.Contains(out, "Timed out") {
		t.Logf("sensor-2 sub: %v %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mosquitto_sub", "-h", "127.0.0.1", "-p", tb.port, "--cafile", tb.pki.CAFile, "-c", "-q", "1",
		"-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "cmd/#", "-W", "25")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	waitFor(t, "sensor-1 connected", func() bool { return tb.Connected("sensor-1") })
	if err := tb.Deliver("sensor-2", "cmd/keep", []byte("k"), 1, false); err != nil {
		t.Fatal(err)
	}

	auth.off.Store(true)
	t0 := time.Now()
	ok := tb.Revoke("sensor-1")
	t.Logf("Revoke returned after %v", time.Since(t0))
	if !ok {
		t.Fatal("Revoke: no session")
	}
	took := time.Since(t0)
	if took > time.Second || tb.Connected("sensor-1") {
		t.Fatalf("sensor-1 still connected %v after Revoke began", took)
	}
	// mosquitto_sub reconnects after its 1 s delay, is refused and exits.
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub still running 10 s after Revoke")
	}
	if _, ok := tb.srv.Clients.Get("sensor-1"); ok || tb.Connected("sensor-1") {
		t.Fatal("sensor-1's session survived Revoke")
	}
	if _, ok := tb.srv.Clients.Get("sensor-2"); !ok {
		t.Fatal("sensor-2's session was deleted too")
	}
	if tb.Stats().Revoked.Load() != 1 {
		t.Fatalf("Stats.Revoked = %d", tb.Stats().Revoked.Load())
	}
	if out, err := tb.mosq(t, "mosquitto_pub", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "telemetry/x", "-m", "after", "-q", "1"); err == nil {
		t.Fatalf("revoked credentials still publish: %s", out)
	}
	// The session DB forgot sensor-1 and kept sensor-2 (and its command).
	_ = tb.Close()
	pki := tb.pki
	tb2 := startBroker(t, func(c *Config) { c.Auth = auth; c.SessionDB = db; c.TLS = pki.ServerTLS(t, "127.0.0.1", "localhost") })
	if _, ok := tb2.srv.Clients.Get("sensor-1"); ok {
		t.Fatal("sensor-1's session restored from the session DB after Revoke")
	}
	if _, ok := tb2.srv.Clients.Get("sensor-2"); !ok {
		t.Fatal("sensor-2's session lost from the session DB")
	}
	for _, m := range tb.up.all() {
		if strings.Contains(m, "after") {
			t.Fatalf("a revoked device's publish reached the upstream: %s", m)
		}
	}
	t.Logf("revoked in %v", took)
}
