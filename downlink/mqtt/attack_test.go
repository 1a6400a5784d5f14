package mqtt

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
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
	floods := []struct {
		name    string
		run     func(t *testing.T, addr string) string // returns what it sent
		counter string                                 // child stat that must be > 0
	}{
		{"aliases", floodAliases, "alias_refused"},
		{"long-topics", floodLongTopics, "topic_too_long"},
		{"retained", floodRetained, "retain_dropped"},
		{"subscriptions", floodSubscriptions, "subscriptions_refused"},
		{"connections", floodConnections, "pending_refused"},
	}
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			c := startAttackChild(t)
			base, baseDisk := vmRSS(t, c.pid), fileSize(c.db)
			peak := watchRSS(c.pid)
			what := f.run(t, c.addr)
			time.Sleep(300 * time.Millisecond)
			p := peak()
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
	conn := dialDevice(t, c.addr, 5)
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

// dialDevice logs in as sensor-1 over TLS with MQTT version v (4 or 5).
func dialDevice(t *testing.T, addr string, v byte) net.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the attacker does not care
	if err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: "sensor-1", UsernameFlag: true, Username: []byte("sensor-1"), PasswordFlag: true, Password: []byte("pw1")}}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", ack, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn
}

// drain reads the broker's packets until the connection ends, signalling
// each PINGRESP on pong.
func drain(conn net.Conn, pong chan<- struct{}) {
	r := bufio.NewReader(conn)
	for {
		typ, err := r.ReadByte()
		if err != nil {
			return
		}
		n, mul := 0, 1
		for {
			c, err := r.ReadByte()
			if err != nil {
				return
			}
			n += int(c&0x7f) * mul
			mul <<= 7
			if c&0x80 == 0 {
				break
			}
		}
		if _, err := r.Discard(n); err != nil {
			return
		}
		if typ == 0xd0 {
			select {
			case pong <- struct{}{}:
			default:
			}
		}
	}
}

// floodAs keeps one device sending packets from next (reconnecting when
// the broker hangs up) until n packets went out.
func floodAs(t *testing.T, addr string, v byte, n int, next func(i int) packets.Packet) (sent, reconnects int) {
	pong := make(chan struct{}, 1)
	dial := func() net.Conn {
		c := dialDevice(t, addr, v)
		go drain(c, pong)
		return c
	}
	conn := dial()
	defer func() { _ = conn.Close() }()
	// At the end, a PINGREQ answered means the broker handled everything
	// before it on this connection.
	defer func() {
		if _, err := conn.Write([]byte{0xc0, 0}); err != nil {
			return
		}
		// No PINGRESP if the broker hung up on the last packet (a refused
		// alias or topic); the RSS sampling runs on meanwhile.
		select {
		case <-pong:
		case <-time.After(3 * time.Second):
		}
	}()
	var b bytes.Buffer
	for sent < n {
		pk := next(sent)
		pk.ProtocolVersion = v
		b.Reset()
		var err error
		switch pk.FixedHeader.Type {
		case packets.Publish:
			err = pk.PublishEncode(&b)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&b)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b.Bytes()); err != nil {
			_ = conn.Close()
			conn = dial()
			reconnects++
			continue
		}
		sent++
	}
	return sent, reconnects
}

func publish(topic string, payload []byte, retain bool, alias uint16) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, TopicName: topic, Payload: payload}
	if alias > 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	return pk
}

// floodAliases: MQTT 5 topic aliases 1..65535, each set with a new topic.
func floodAliases(t *testing.T, addr string) string {
	sent, rc := floodAs(t, addr, 5, 1000, func(i int) packets.Packet {
		return publish(fmt.Sprintf("telemetry/a/%0200d", i), []byte("x"), false, uint16(1+i%65535))
	})
	return fmt.Sprintf("%d aliased publishes (aliases 1..1000, 200-byte topics), %d reconnects", sent, rc)
}

// floodLongTopics: the 20 KB topics, with aliases.
func floodLongTopics(t *testing.T, addr string) string {
	long := "telemetry/" + strings.Repeat("t", 20<<10)
	sent, rc := floodAs(t, addr, 5, 500, func(i int) packets.Packet {
		return publish(long+strconv.Itoa(i), []byte("x"), false, uint16(1+i%8))
	})
	return fmt.Sprintf("%d publishes with 20 KB topics, %d reconnects", sent, rc)
}

// floodRetained: 600 retained 200 KB messages on distinct topics.
func floodRetained(t *testing.T, addr string) string {
	payload := bytes.Repeat([]byte("r"), 200<<10)
	sent, rc := floodAs(t, addr, 4, 600, func(i int) packets.Packet {
		return publish(fmt.Sprintf("telemetry/r/%d", i), payload, true, 0)
	})
	return fmt.Sprintf("%d retained 200 KB publishes, %d reconnects", sent, rc)
}

// floodSubscriptions: 5,000 distinct filters, 100 per SUBSCRIBE.
func floodSubscriptions(t *testing.T, addr string) string {
	sent, rc := floodAs(t, addr, 5, 50, func(i int) packets.Packet {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: uint16(i + 1)}
		for j := 0; j < 100; j++ {
			pk.Filters = append(pk.Filters, packets.Subscription{Filter: fmt.Sprintf("cmd/s/%d/%d", i, j), Qos: 1})
		}
		return pk
	})
	return fmt.Sprintf("%d SUBSCRIBEs of 100 filters, %d reconnects", sent, rc)
}

// floodConnections: 3,000 TLS connections from 375 source addresses
// (127.1.x.y) that never send CONNECT, all held open.
func floodConnections(t *testing.T, addr string) string {
	var (
		mu      sync.Mutex
		conns   []net.Conn
		handsOK atomic.Int64
		wg      sync.WaitGroup
	)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	sem := make(chan struct{}, 32)
	for i := 0; i < 3000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/8/250), byte(1+i/8%250))}
			d := &net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
			c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				return // refused: closed by the broker during the handshake
			}
			handsOK.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	return fmt.Sprintf("3000 TLS connections without CONNECT from 375 sources, %d completed the TLS handshake", handsOK.Load())
}

// TestAttackBrokerChild is the broker side of TestAttackDeviceFloods, run
// only in its child process.
func TestAttackBrokerChild(t *testing.T) {
	dir := os.Getenv(attackChildEnv)
	if dir == "" {
		t.Skip("child process of TestAttackDeviceFloods")
	}
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

// watchRSS samples pid's RSS every 50 ms until the returned func is
// called, which returns the peak.
func watchRSS(pid int) func() int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if r := vmRSSOr(pid, 0); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(stop); <-done; return peak.Load() }
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	r := vmRSSOr(pid, -1)
	if r < 0 {
		t.Fatalf("no VmRSS for pid %d", pid)
	}
	return r
}

func vmRSSOr(pid int, def int64) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return def
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return def
			}
			return kb << 10
		}
	}
	return def
}
