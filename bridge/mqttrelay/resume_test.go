package mqttrelay

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// freezer is a TCP proxy whose existing connections can be frozen: from
// then on every byte on them is swallowed, as on a TCP connection whose
// retransmission timer has backed off far beyond the outage. Connections
// opened later pass (the new tunnel).
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen map[net.Conn]bool // by either side; value: frozen
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, frozen: make(map[net.Conn]bool)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
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
			f.mu.Lock()
			f.frozen[c], f.frozen[up] = false, false
			f.mu.Unlock()
			f.wg.Add(2)
			go f.pipe(c, up)
			go f.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for c := range f.frozen {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			frozen := f.frozen[src]
			f.mu.Unlock()
			if !frozen {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
			}
			return
		}
	}
}

// freeze swallows everything on the connections open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.frozen {
		f.frozen[c] = true
	}
}

// TestUplinkUpResumesStalledSessions: the central connections outlive an
// "outage" that swallows every byte (as gVisor's TCP does when the tunnel
// moves to another gateway: the connection survives and waits out its
// retransmission backoff). The keepalive is 10 minutes, so only UplinkUp
// can get the spool moving within the test's deadline. Every acknowledged
// message arrives: QoS 1 at least once, QoS 2 exactly once.
func TestUplinkUpResumesStalledSessions(t *testing.T) {
	central := startMosquitto(t)
	wan := newFreezer(t, central.addr)
	col := startCollector(t, central.addr)
	cfg := siteConfig{
		spoolDir: t.TempDir(), central: wan.ln.Addr().String(),
		plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(realpeer.FreePort(t))),
		passwords: map[string]string{"sensor-1": "p", "sensor-2": "p", "sensor-3": "p"},
		keepAlive: 10 * time.Minute,
	}
	st := startSite(t, cfg)
	devs := []*simDevice{
		startDevice(t, cfg.plainAddr, "sensor-1", "p", 1, 20*time.Millisecond),
		startDevice(t, cfg.plainAddr, "sensor-2", "p", 2, 20*time.Millisecond),
	}
	// sensor-3 is configured but idle: its connection is dropped only
	// because nothing was read on it since before the outage.
	if err := st.relay.AddEndpoint("sensor-3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "traffic at central", func() bool { return len(col.seqs("sensor-1")) > 10 && len(col.seqs("sensor-2")) > 10 })
	waitFor(t, 30*time.Second, "three sessions connected", func() bool { return st.relay.Stats().Connected.Load() == 3 })
	downSince := time.Now()
	wan.freeze()
	time.Sleep(time.Second)
	acked := st.relay.Stats().Acked.Load()
	time.Sleep(time.Second)
	if a := st.relay.Stats().Acked.Load(); a != acked {
		t.Fatalf("the frozen connections still acknowledged messages (%d → %d): the outage is not simulated", acked, a)
	}
	queued := st.sp.Stats().Queued.Load()
	up := time.Now()
	n := st.relay.UplinkUp(downSince)
	if n != 3 {
		t.Errorf("UplinkUp dropped %d connections, want 3 (two with messages in flight, one idle since before the outage)", n)
	}
	waitFor(t, 30*time.Second, "spool moving after UplinkUp", func() bool { return st.relay.Stats().Acked.Load() > acked })
	t.Logf("outage 2 s, %d messages queued; first acknowledgement %v after UplinkUp (keepalive 10 min)", queued, time.Since(up).Round(time.Millisecond))
	for _, d := range devs {
		d.halt()
	}
	waitFor(t, 30*time.Second, "spool drained", func() bool { return st.sp.Stats().Queued.Load() == 0 })
	t.Logf("spool drained %v after UplinkUp; relay: connects %d, lost %d, resumed %d",
		time.Since(up).Round(time.Millisecond), st.relay.Stats().Connects.Load(), st.relay.Stats().ConnectionsLost.Load(), st.relay.Stats().Resumed.Load())
	for _, d := range devs {
		waitFor(t, 30*time.Second, d.ep+" caught up at central", func() bool {
			s := col.seqs(d.ep)
			return len(s) > 0 && maxSeq(s) >= d.acked.Load()
		})
		count := map[int64]int{}
		for _, s := range col.seqs(d.ep) {
			count[s]++
		}
		var missing, dups int
		for s := int64(1); s <= d.acked.Load(); s++ {
			switch {
			case count[s] == 0:
				missing++
			case count[s] > 1:
				dups += count[s] - 1
			}
		}
		t.Logf("%s QoS %d: acked %d, lost %d, duplicated %d", d.ep, d.qos, d.acked.Load(), missing, dups)
		if missing > 0 {
			t.Errorf("%s: %d acknowledged messages lost", d.ep, missing)
		}
		if d.qos == 2 && dups > 0 {
			t.Errorf("%s: QoS 2 delivered %d duplicates", d.ep, dups)
		}
	}
	if n := st.relay.UplinkUp(time.Now().Add(-time.Hour)); n != 0 {
		t.Errorf("a second UplinkUp dropped %d fresh connections with nothing in flight", n)
	}
}
