package mqtt

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/downlink/mqtt/mqtttest"
	"github.com/fleetgate/fleetgate/internal/procstat"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Issue 18: one authenticated device (or, for connections, anyone who can
// open TCP) must not grow the broker by more than these while flooding.
// Before the bounds: aliases 22.8 → 515 MB in 5 s, retained 64 KB → 170 MB
// of session store in 16 s, 3,000 idle TLS connections ≈ 100 KB each.
const (
	attackRSSMax   = 32 << 20
	attackDiskMax  = 8 << 20
	attackChildEnv = "FG_MQTT_ATTACK_CHILD"
)

// TestAttackDeviceFloods runs the broker (TLS, bbolt session store, as the
// bridge does) in a child process, this test binary's
// TestAttackBrokerChild, and floods it as one device; it measures the
// child's RSS (VmRSS in /proc) and the session store's size.
func TestAttackDeviceFloods(t *testing.T) {
	dev := mqtttest.Device{Name: "sensor-1", Password: "pw1"}
	floods := []struct {
		name    string
		run     func(t *testing.T, addr string) string // returns what it sent
		counter string                                 // child stat that must be > 0
	}{
		{"aliases", func(t *testing.T, addr string) string { return dev.Aliases(t, addr, 1000) }, "alias_refused"},
		{"long-topics", func(t *testing.T, addr string) string { return dev.LongTopics(t, addr, 500) }, "topic_too_long"},
		{"retained", func(t *testing.T, addr string) string { return dev.Retained(t, addr, 600, 200<<10) }, "retain_dropped"},
		{"subscriptions", func(t *testing.T, addr string) string { return dev.Subscriptions(t, addr, 50) }, "subscriptions_refused"},
		{"connections", func(t *testing.T, addr string) string {
			what, closeAll := mqtttest.IdleConnections(t, addr, 3000)
			t.Cleanup(closeAll)
			return what
		}, "pending_refused"},
	}
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			c := startAttackChild(t)
			rss, baseDisk := procstat.WatchRSS(c.pid), fileSize(c.db)
			base := rss.Base
			if base == 0 {
				t.Fatalf("no RSS for pid %d", c.pid)
			}
			what := f.run(t, c.addr)
			time.Sleep(300 * time.Millisecond)
			p := rss.Stop()
			disk := fileSize(c.db)
			st := c.stats(t)
			t.Logf("%s: %s; child RSS %.1f MB → peak %.1f MB (+%.1f MB); session store %d → %d bytes; stats %v",
				f.name, what, mb(base), mb(p), mb(p-base), baseDisk, disk, st)
			if n, _ := strconv.Atoi(st[f.counter]); n == 0 {
				t.Fatalf("%s = 0: the flood never hit its bound", f.counter)
			}
			if p-base >= attackRSSMax*raceRSSFactor {
				t.Fatalf("RSS grew by %.1f MB, bound %d MB (x%d under -race)", mb(p-base), attackRSSMax>>20, raceRSSFactor)
			}
			if disk-baseDisk >= attackDiskMax {
				t.Fatalf("session store grew by %d bytes, bound %d", disk-baseDisk, attackDiskMax)
			}
		})
	}
}

type attackChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	pid   int
	addr  string
	db    string
}

func startAttackChild(t *testing.T) *attackChild {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackBrokerChild$", "-test.v")
	cmd.Env = append(os.Environ(), attackChildEnv+"="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := &attackChild{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(out), pid: cmd.Process.Pid}
	m := c.kv(t, "READY")
	c.addr, c.db = m["addr"], m["db"]
	// Warm up: one connection, so the baseline includes TLS and a session.
	conn := mqtttest.Device{Name: "sensor-1", Password: "pw1"}.Dial(t, c.addr, 5)
	_ = conn.Close()
	time.Sleep(200 * time.Millisecond)
	return c
}

func (c *attackChild) kv(t *testing.T, prefix string) map[string]string {
	for c.lines.Scan() {
		if l := c.lines.Text(); strings.HasPrefix(l, prefix+" ") {
			m := map[string]string{}
			for _, f := range strings.Fields(l)[1:] {
				k, v, _ := strings.Cut(f, "=")
				m[k] = v
			}
			return m
		}
	}
	t.Fatalf("child ended before %s", prefix)
	return nil
}

func (c *attackChild) stats(t *testing.T) map[string]string {
	_ = c.stdin.Close()
	return c.kv(t, "STATS")
}

// TestAttackBrokerChild is the broker side of TestAttackDeviceFloods, run
// only in its child process.
func TestAttackBrokerChild(t *testing.T) {
	dir := testenv.ChildProcess(t, attackChildEnv, "TestAttackDeviceFloods")
	db := filepath.Join(dir, "mqtt-sessions.db")
	// The Upstream counts and drops (the real one is the relay and its
	// spool, bounded on its own: bridge/spool).
	tb := startBroker(t, func(c *Config) { c.SessionDB = db; c.Upstream = discard{} })
	fmt.Printf("READY addr=%s db=%s\n", tb.TLSAddr(), db)
	var pendingMax atomic.Int64
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if p := int64(tb.Pending()); p > pendingMax.Load() {
				pendingMax.Store(p)
			}
		}
	}()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until EOF
	s := tb.Stats()
	fmt.Printf("STATS alias_refused=%d topic_too_long=%d retain_dropped=%d subscriptions_refused=%d pending_refused=%d pending_refused_source=%d pending_max=%d upstream=%d\n",
		s.AliasRefused.Load(), s.TopicTooLong.Load(), s.RetainDropped.Load(), s.SubscriptionsRefused.Load(),
		s.PendingConnectRefused.Load()+s.PendingConnectRefusedSource.Load(), s.PendingConnectRefusedSource.Load(), pendingMax.Load(), s.Upstream.Load())
}

type discard struct{}

func (discard) Publish(string, Message) error { return nil }

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestRetainedBound: by default the broker keeps none of a device's
// retained messages (the flag still goes upstream); with
// RetainedPerEndpoint 2 it keeps two topics, updates them in place, frees
// one on an empty payload, and drops the rest (counted).
func TestRetainedBound(t *testing.T) {
	dev := mqtttest.Device{Name: "sensor-1", Password: "pw1"}
	kept := func(tb *testBroker) int { return len(tb.srv.Topics.Messages(mount("sensor-1", "#"))) }
	t.Run("default", func(t *testing.T) {
		tb := startBroker(t, nil)
		dev.Retained(t, tb.TLSAddr().String(), 5, 10)
		if n, d := kept(tb), tb.Stats().RetainDropped.Load(); n != 0 || d != 5 {
			t.Fatalf("kept %d retained, dropped %d; want 0 and 5", n, d)
		}
		up := tb.up.all()
		if len(up) != 5 {
			t.Fatalf("upstream got %d messages, want 5", len(up))
		}
		for _, m := range up {
			if !strings.HasSuffix(m, "|true|false") {
				t.Fatalf("upstream got %q without the retain flag", m)
			}
		}
	})
	t.Run("two", func(t *testing.T) {
		tb := startBroker(t, func(c *Config) { c.RetainedPerEndpoint = 2 })
		addr := tb.TLSAddr().String()
		dev.Retained(t, addr, 5, 10) // telemetry/r/0..4: 0 and 1 kept
		if n, d := kept(tb), tb.Stats().RetainDropped.Load(); n != 2 || d != 3 {
			t.Fatalf("kept %d retained, dropped %d; want 2 and 3", n, d)
		}
		dev.Retained(t, addr, 2, 10) // the same two topics again: updated, nothing dropped
		if n, d := kept(tb), tb.Stats().RetainDropped.Load(); n != 2 || d != 3 {
			t.Fatalf("after updates kept %d, dropped %d; want 2 and 3", n, d)
		}
		dev.Flood(t, addr, 4, 1, func(int) packets.Packet { return mqtttest.Publish("telemetry/r/0", nil, true, 0) })
		dev.Flood(t, addr, 4, 1, func(int) packets.Packet { return mqtttest.Publish("telemetry/r/9", []byte("x"), true, 0) })
		if n, d := kept(tb), tb.Stats().RetainDropped.Load(); n != 2 || d != 3 {
			t.Fatalf("after clear and new topic kept %d, dropped %d; want 2 and 3", n, d)
		}
	})
}

// TestPendingConnectsPerSource: one source address holds at most
// MaxPendingConnectsPerSource connections without a CONNECT; another
// source and a device that logs in are not affected.
func TestPendingConnectsPerSource(t *testing.T) {
	tb := startBroker(t, func(c *Config) { c.MaxPendingConnectsPerSource = 3 })
	addr := tb.TLSAddr().String()
	held := 0
	for i := 0; i < 10; i++ {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}, Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			continue // closed at accept
		}
		t.Cleanup(func() { _ = c.Close() })
		held++
	}
	waitFor(t, "per-source refusals", func() bool { return tb.Stats().PendingConnectRefusedSource.Load() == 7 })
	if held != 3 || tb.Pending() != 3 {
		t.Fatalf("held %d, pending %d; want 3 and 3", held, tb.Pending())
	}
	// A device from another address logs in; its slot is freed by CONNECT.
	c := mqtttest.Device{Name: "sensor-1", Password: "pw1"}.Dial(t, addr, 4)
	defer c.Close()
	if p := tb.Pending(); p != 3 {
		t.Fatalf("pending %d after a login, want 3", p)
	}
}
