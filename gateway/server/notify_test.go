package server

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestSDNotify checks what a systemd Type=notify unit relies on: READY=1
// once the engine says its sockets are bound (Env.Ready), exactly once,
// and STOPPING=1 on shutdown.
func TestSDNotify(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sockPath)

	bound := make(chan struct{})
	eng := EngineFunc(func(ctx context.Context, env *Env) error {
		<-bound // the engine binds its sockets before it says it is ready
		env.Ready()
		env.Ready() // a second call must not send READY=1 again
		<-ctx.Done()
		return nil
	})
	cfg := parse(t, filepath.Join(dir, "gw.sock"), "")
	srv, err := New(cfg, Options{Engine: eng, Host: newNullHost(), Clock: stacktest.NewClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	read := func() string {
		t.Helper()
		buf := make([]byte, 256)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no sd_notify message: %v", err)
		}
		return string(buf[:n])
	}
	// Nothing before the engine is bound.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("notified before the engine was bound: %d bytes", n)
	}
	close(bound)
	if got := read(); !strings.Contains(got, "READY=1") {
		t.Fatalf("first message %q, want READY=1", got)
	}
	cancel()
	if got := read(); !strings.Contains(got, "STOPPING=1") {
		t.Fatalf("after cancel got %q, want STOPPING=1 (and READY=1 only once)", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
