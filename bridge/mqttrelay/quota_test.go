package mqttrelay

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestQoS2ReplayWithinBrokerQuota: a backlog of QoS 2 messages replayed to
// a mosquitto with its default limits (max_inflight_messages 20, which also
// bounds a client's unreleased incoming QoS 2 messages). Beyond that quota
// mosquitto answers an MQTT 3.1.1 client's PUBLISH with a plain PUBREC and
// drops the message (reason 0x97 is not on the wire in 3.1.1), so a relay
// window above it loses acknowledged messages silently. Every message must
// arrive exactly once and mosquitto must refuse none.
func TestQoS2ReplayWithinBrokerQuota(t *testing.T) {
	// Default inflight limit; deep queue only for the collecting subscriber.
	m := realpeer.StartMosquitto(t, nil, realpeer.MosquittoConfig{Extra: "max_queued_messages 100000\n"})
	central := m.Addr.String()
	// The WAN: 40 ms of latency toward the relay, so a window's PUBRECs
	// come back only after the whole window was sent (as over a cellular
	// uplink), and an outage at first.
	wan := newGate(t, slowLink(t, central, 40*time.Millisecond))
	wan.setOpen(false)
	col := startCollector(t, central)
	sitePort := realpeer.FreePort(t)
	st := startSite(t, siteConfig{spoolDir: t.TempDir(), central: wan.addr(),
		plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sitePort)), passwords: map[string]string{"sensor-1": "p"}})
	const n = 300
	for i := 1; i <= n; i++ {
		err := st.relay.Publish("sensor-1", mqtt.Message{Topic: "telemetry/seq", QoS: 2, PacketID: uint16(i),
			Payload: []byte(fmt.Sprintf("sensor-1 %d", i))})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	wan.setOpen(true)
	waitFor(t, 60*time.Second, "spool drained", func() bool { return st.sp.Stats().Queued.Load() == 0 })
	// Every message was PUBCOMPed: mosquitto has released what it kept; the
	// subscriber gets it right behind (polled: another process).
	for end := time.Now().Add(5 * time.Second); col.n.Load() < n && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive right behind
	got := col.seqs("sensor-1")
	refused := strings.Count(m.Proc.Output(), "rc151)")
	t.Logf("window %d: central got %d of %d, mosquitto refused %d (quota exceeded)", st.relay.cfg.Window, len(got), n, refused)
	if refused > 0 {
		t.Errorf("mosquitto refused %d QoS 2 messages for quota (rc 151)", refused)
	}
	// Order is not checked here: with its inflight limit mosquitto itself
	// may reorder what it queues for the collecting subscriber.
	sorted := slices.Sorted(slices.Values(got))
	for i, s := range sorted {
		if s != int64(i+1) {
			t.Fatalf("central got %v, want 1..%d once each", got, n)
		}
	}
	if len(got) != n {
		t.Fatalf("central got %d messages, want %d", len(got), n)
	}
}

// slowLink is a TCP proxy to target that delivers what target sends
// delay late (a one-way latency; order and bytes unchanged). It returns its
// address.
func slowLink(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			track(c)
			track(up)
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go delayCopy(c, up, delay)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// delayCopy copies src to dst, each chunk delay after it was read.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{time.Now().Add(delay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	_ = dst.Close()
	for range ch { // drain until the reader ends
	}
}
