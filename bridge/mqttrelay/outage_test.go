package mqttrelay

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// simDevice publishes numbered messages one after another, each only after
// the previous one was acknowledged by the site broker, as MCU firmware on
// a persistent session would.
type simDevice struct {
	ep    string
	qos   byte
	c     paho.Client
	acked atomic.Int64 // highest acknowledged sequence number
	stop  chan struct{}
	done  chan struct{}
}

func startDevice(t *testing.T, brokerAddr, ep, pw string, qos byte, every time.Duration) *simDevice {
	t.Helper()
	d := &simDevice{ep: ep, qos: qos, stop: make(chan struct{}), done: make(chan struct{})}
	o := paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID(ep).SetUsername(ep).SetPassword(pw).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond).
		SetKeepAlive(5 * time.Second)
	d.c = paho.NewClient(o)
	if tok := d.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s connect: %v", ep, tok.Error())
	}
	go func() {
		defer close(d.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for seq := int64(1); ; seq++ {
			select {
			case <-d.stop:
				return
			case <-tick.C:
			}
			tok := d.c.Publish("telemetry/seq", qos, false, fmt.Sprintf("%s %d", ep, seq))
			select {
			case <-tok.Done():
			case <-d.stop:
				return
			}
			if tok.Error() != nil {
				seq-- // not acknowledged: the device keeps it and tries again
				continue
			}
			d.acked.Store(seq)
		}
	}()
	t.Cleanup(func() { d.halt(); d.c.Disconnect(0) })
	return d
}

func (d *simDevice) halt() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

// collector is the central application: it records every message per
// endpoint in arrival order.
type collector struct {
	mu  sync.Mutex
	got map[string][]int64
	n   atomic.Int64
}

func startCollector(t *testing.T, centralAddr string) *collector {
	t.Helper()
	c := &collector{got: make(map[string][]int64)}
	o := paho.NewClientOptions().AddBroker("tcp://" + centralAddr).SetClientID("central-app").SetOrderMatters(true)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	tok := cl.Subscribe("sites/s1/+/telemetry/#", 2, func(_ paho.Client, m paho.Message) {
		f := strings.Fields(string(m.Payload()))
		if len(f) != 2 {
			return
		}
		seq, _ := strconv.ParseInt(f[1], 10, 64)
		c.mu.Lock()
		c.got[f[0]] = append(c.got[f[0]], seq)
		c.mu.Unlock()
		c.n.Add(1)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribe: %v", tok.Error())
	}
	return c
}

func (c *collector) seqs(ep string) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.got[ep]...)
}

// TestOutageWithoutLoss: devices publish numbered messages at a steady
// rate; the WAN to the central broker is cut; while it is cut the bridge
// is killed and restarted on the same spool; then the WAN comes back.
// Every acknowledged message must arrive exactly once (QoS 2) or at least
// once (QoS 1), in order per device.
func TestOutageWithoutLoss(t *testing.T) {
	central := startMosquitto(t)
	wan := newGate(t, central.addr)
	col := startCollector(t, central.addr)
	sitePort := realpeer.FreePort(t)
	cfg := siteConfig{
		spoolDir: t.TempDir(), central: wan.addr(), plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sitePort)),
		passwords: map[string]string{"sensor-1": "p", "sensor-2": "p", "sensor-3": "p", "sensor-4": "p"},
	}
	st := startSite(t, cfg)
	devs := []*simDevice{
		startDevice(t, cfg.plainAddr, "sensor-1", "p", 1, 10*time.Millisecond),
		startDevice(t, cfg.plainAddr, "sensor-2", "p", 2, 10*time.Millisecond),
		startDevice(t, cfg.plainAddr, "sensor-3", "p", 1, 10*time.Millisecond),
		startDevice(t, cfg.plainAddr, "sensor-4", "p", 2, 10*time.Millisecond),
	}
	phase := func(name string, d time.Duration) {
		time.Sleep(d) // the scenario's timeline: traffic keeps flowing meanwhile
		t.Logf("%-28s central has %5d messages, spool queued %d", name, col.n.Load(), st.sp.Stats().Queued.Load())
	}
	phase("normal traffic", time.Second)
	wan.setOpen(false)
	phase("WAN cut", 1500*time.Millisecond)
	queuedBeforeKill := st.sp.Stats().Queued.Load()
	st.kill()
	st = startSite(t, cfg)
	recovered := st.sp.Stats().Recovered.Load()
	phase("bridge killed + restarted", 1500*time.Millisecond)
	wan.setOpen(true)
	phase("WAN back", time.Second)
	for _, d := range devs {
		d.halt()
	}
	waitFor(t, 60*time.Second, "spool drained", func() bool { return st.sp.Stats().Queued.Load() == 0 })
	want := int64(0)
	for _, d := range devs {
		want += d.acked.Load()
	}
	waitFor(t, 30*time.Second, "central caught up", func() bool {
		for _, d := range devs {
			s := col.seqs(d.ep)
			if len(s) == 0 || maxSeq(s) < d.acked.Load() {
				return false
			}
		}
		return true
	})
	t.Logf("spool: %d queued at kill, %d recovered after restart; relay after restart: sent %d, acked %d, device QoS 2 retransmissions dropped %d, connects %d, lost %d",
		queuedBeforeKill, recovered, st.relay.Stats().Sent.Load(), st.relay.Stats().Acked.Load(), st.relay.Stats().DuplicatesDropped.Load(),
		st.relay.Stats().Connects.Load(), st.relay.Stats().ConnectionsLost.Load())
	if queuedBeforeKill == 0 || recovered == 0 {
		t.Errorf("the outage did not exercise the spool (queued %d, recovered %d)", queuedBeforeKill, recovered)
	}
	for _, d := range devs {
		got := col.seqs(d.ep)
		acked := d.acked.Load()
		count := map[int64]int{}
		for _, s := range got {
			count[s]++
		}
		var missing, dups int
		var dupSeqs []int64
		for s := int64(1); s <= acked; s++ {
			switch {
			case count[s] == 0:
				missing++
			case count[s] > 1:
				dups += count[s] - 1
				dupSeqs = append(dupSeqs, s)
			}
		}
		if len(dupSeqs) > 0 {
			t.Logf("%s duplicated seqs %v", d.ep, dupSeqs)
		}
		inOrder := firstArrivalsIncreasing(got)
		t.Logf("%s QoS %d: acked %d, received %d, missing %d, duplicates %d, in order %v",
			d.ep, d.qos, acked, len(got), missing, dups, inOrder)
		if missing > 0 {
			t.Errorf("%s: %d acknowledged messages lost", d.ep, missing)
		}
		if d.qos == 2 && dups > 0 {
			t.Errorf("%s: QoS 2 delivered %d duplicates", d.ep, dups)
		}
		if !inOrder {
			t.Errorf("%s: out of order: %v", d.ep, got)
		}
		if acked < 100 {
			t.Errorf("%s: only %d messages acknowledged: the scenario did not run", d.ep, acked)
		}
	}
}

func maxSeq(s []int64) int64 {
	var m int64
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// firstArrivalsIncreasing: ignoring repeats of already-seen numbers, the
// sequence numbers arrive in increasing order.
func firstArrivalsIncreasing(s []int64) bool {
	seen := map[int64]bool{}
	var last int64
	for _, v := range s {
		if seen[v] {
			continue
		}
		seen[v] = true
		if v < last {
			return false
		}
		last = v
	}
	return true
}
