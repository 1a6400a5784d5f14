package mqtt

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is an io.Writer safe for the broker's concurrent log calls.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSessionDBFreshStartLogsNoError: a fresh session DB (no $SYS record
// yet) and a restart on it log nothing at ERROR, while a device session,
// a subscription and a queued command go through the store.
func TestSessionDBFreshStartLogsNoError(t *testing.T) {
	db := t.TempDir() + "/sessions.db"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	var logs syncBuffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mod := func(c *Config) { c.TLSAddr = addr; c.SessionDB = db; c.Logger = lg }
	tb := startBroker(t, mod)
	sub := func(tb *testBroker, wait string) string {
		out, _ := tb.mosq(t, "mosquitto_sub", "-c", "-q", "1", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1",
			"-t", "cmd/#", "-v", "-C", "1", "-W", wait)
		return strings.TrimSpace(out)
	}
	sub(tb, "1")
	waitFor(t, "device asleep", func() bool { return !tb.Connected("sensor-1") })
	if err := tb.Deliver("sensor-1", "cmd/ota", []byte("v2"), 1, false); err != nil {
		t.Fatal(err)
	}
	_ = tb.Close()
	// The restart below reads an existing $SYS record (the other path).
	if has, err := hasSysInfo(db); err != nil || !has {
		t.Fatalf("after the first run the DB has no $SYS record (%v, %v)", has, err)
	}
	pki := tb.pki
	tb2 := startBroker(t, func(c *Config) { mod(c); c.TLS = pki.ServerTLS(t, "127.0.0.1", "localhost") })
	tb2.pki = pki
	if got := sub(tb2, "5"); got != "cmd/ota v2" {
		t.Fatalf("after restart the device got %q, want %q", got, "cmd/ota v2")
	}
	_ = tb2.Close()
	out := logs.String()
	if !strings.Contains(out, "mqtt listening") {
		t.Fatalf("captured no broker log lines:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("ERROR logged: %s", line)
		}
	}
}
