package mqttrelay

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/mqtt"
)

// MQTT control packet types the step gate can drop.
const (
	pktPUBREC  = 5
	pktPUBREL  = 6
	pktPUBCOMP = 7
)

// stepGate is a TCP proxy in front of the central broker that forwards
// whole MQTT packets and drops the packets of one type in one direction,
// so a QoS 2 flow stops at a chosen step: PUBREC dropped (central has the
// PUBLISH, the relay does not know), PUBREL dropped (the relay has the
// PUBREC), PUBCOMP dropped (central has released the message). cut closes
// every connection, as the WAN going away before a kill -9.
type stepGate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     byte // packet type dropped relay -> central (0: none)
	down   byte // packet type dropped central -> relay
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newStepGate(t *testing.T, target string) *stepGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &stepGate{ln: ln, target: target}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
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
			g.mu.Lock()
			g.conns = append(g.conns, c, up)
			g.mu.Unlock()
			g.wg.Add(2)
			go g.pipe(up, c, func() byte { g.mu.Lock(); defer g.mu.Unlock(); return g.up })
			go g.pipe(c, up, func() byte { g.mu.Lock(); defer g.mu.Unlock(); return g.down })
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); g.cut(); g.wg.Wait() })
	return g
}

func (g *stepGate) addr() string { return g.ln.Addr().String() }

func (g *stepGate) drop(up, down byte) {
	g.mu.Lock()
	g.up, g.down = up, down
	g.mu.Unlock()
}

func (g *stepGate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.conns = nil
}

// pipe copies MQTT packets (fixed header, Remaining Length, body) from src
// to dst, dropping those of the type drop() returns.
func (g *stepGate) pipe(dst, src net.Conn, drop func() byte) {
	defer g.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	br := bufio.NewReader(src)
	for {
		h, err := br.ReadByte()
		if err != nil {
			return
		}
		pkt := []byte{h}
		n, mult := 0, 1
		for i := 0; ; i++ {
			b, err := br.ReadByte()
			if err != nil || i == 4 {
				return
			}
			pkt = append(pkt, b)
			n += int(b&0x7f) * mult
			mult *= 128
			if b&0x80 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		if h>>4 == drop() {
			continue
		}
		if _, err := dst.Write(append(pkt, body...)); err != nil {
			return
		}
	}
}

// TestKillAtEachQoS2Step: the relay is killed (connections cut, no flush)
// with its QoS 2 window stopped at each step of the flow against a real
// mosquitto, and restarted on the same spool directory: after PUBLISH
// reached central (PUBREC lost), after PUBREC reached the relay (PUBREL
// lost), after PUBREL reached central (PUBCOMP lost). Each time 30
// messages are queued (20 in flight, the window; 10 not yet sent) and more
// arrive while the restarted relay resumes. The central application must
// get every message exactly once, in order; mosquitto's log must show
// each resumed PUBLISH with DUP and no packet id reused for new content.
func TestKillAtEachQoS2Step(t *testing.T) {
	central := startMosquitto(t)
	col := startCollector(t, central.addr)
	g := newStepGate(t, central.addr)
	dir := t.TempDir()
	const ep = "sensor-1"
	start := func() (*spool.Spool, *Relay) {
		sp, err := spool.Open(spool.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(Config{Site: "s1", Server: netip.MustParseAddrPort(g.addr()), AddrOf: addrOf, Spool: sp,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond, KeepAlive: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		return sp, r
	}
	next := 1
	publish := func(r *Relay, n int) {
		for range n {
			if err := r.Publish(ep, mqtt.Message{Topic: "telemetry/seq", QoS: 2, Payload: fmt.Appendf(nil, "%s %d", ep, next)}); err != nil {
				t.Fatal(err)
			}
			next++
		}
	}
	count := func(what string) int { return strings.Count(central.log(t), what+" from s1/"+ep) }
	stages := func(sp *spool.Spool) (s1, s2 int) {
		for _, m := range sp.Pending(ep, 0, 1000) {
			switch m.Stage {
			case 1:
				s1++
			case 2:
				s2++
			}
		}
		return
	}
	sp, r := start()
	publish(r, 5) // a session with history
	waitFor(t, 10*time.Second, "first messages at central", func() bool { return col.n.Load() == 5 })
	steps := []struct {
		name     string
		up, down byte
	}{
		{"PUBLISH at central, PUBREC lost", 0, pktPUBREC},
		{"PUBREC at the relay, PUBREL lost", pktPUBREL, 0},
		{"PUBREL at central, PUBCOMP lost", 0, pktPUBCOMP},
	}
	for _, st := range steps {
		pub0, rel0 := count("Received PUBLISH"), count("Received PUBREL")
		g.drop(st.up, st.down)
		publish(r, 30)
		waitFor(t, 20*time.Second, st.name, func() bool {
			s1, s2 := stages(sp)
			switch st.down | st.up {
			case pktPUBREC: // central has 20 PUBLISHes the relay holds at stage 1
				return count("Received PUBLISH")-pub0 == DefaultWindow && s1 == DefaultWindow
			case pktPUBREL:
				return s2 == DefaultWindow
			default: // central released 20, the relay holds them at stage 2
				return count("Received PUBREL")-rel0 == DefaultWindow && s2 == DefaultWindow
			}
		})
		// kill -9: the WAN goes first (nothing more is exchanged), then
		// the process. Closing the spool adds only an fsync, which a
		// killed process's writes do not need (the page cache keeps them).
		g.cut()
		_ = r.Close()
		_ = sp.Close()
		g.drop(0, 0)
		sp, r = start()
		publish(r, 10) // live traffic during the resume
		want := next - 1
		waitFor(t, 20*time.Second, "central caught up after "+st.name, func() bool { return col.n.Load() >= int64(want) })
		waitFor(t, 10*time.Second, "spool drained", func() bool { return sp.Stats().Queued.Load() == 0 })
	}
	_ = r.Close()
	_ = sp.Close()
	got := col.seqs(ep)
	seen := map[int64]int{}
	var dups, missing []int64
	for _, s := range got {
		seen[s]++
		if seen[s] == 2 {
			dups = append(dups, s)
		}
	}
	for s := int64(1); s < int64(next); s++ {
		if seen[s] == 0 {
			missing = append(missing, s)
		}
	}
	t.Logf("%d published, central received %d: missing %d, duplicated %d", next-1, len(got), len(missing), len(dups))
	if len(dups) > 0 || len(missing) > 0 {
		t.Fatalf("QoS 2 across kills: duplicated %v, missing %v", dups, missing)
	}
	if !firstArrivalsIncreasing(got) {
		t.Fatalf("out of order: %v", got)
	}
	if n := strings.Count(central.log(t), "Received PUBLISH from s1/"+ep+" (d0"); n != next-1 {
		t.Fatalf("mosquitto got %d first-time (DUP 0) PUBLISHes for %d messages", n, next-1)
	}
	t.Logf("resumed with DUP: %d", strings.Count(central.log(t), "Received PUBLISH from s1/"+ep+" (d1"))
}
