package suite

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/downlink/mqtt/mqtttest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/procstat"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// The bridge's "Under attack" rows (issue 18, findings 2 and 3): the DTLS
// listener and the MQTT broker with their shipped defaults, in this
// process, attacked on loopback by the same code as the tests
// (coaptest.SpoofedHelloFlood, mqtttest). Memory is this process's peak
// RSS over the attack (the attacker's own sockets included, so an
// overestimate) and the heap after GC; the tests measure the server alone
// in a child process (TestAttackClientHelloFlood, TestAttackDeviceFloods).

// bridgeAttackBounds are the bounds for the bridge.
const (
	dtlsFloodRSSBound   = 64 << 20
	deviceFloodRSSBound = 32 << 20
	deviceFloodDisk     = 8 << 20
)

// memWatch samples this process's RSS until end, which returns the peak
// RSS growth and the heap growth after GC.
type memWatch struct {
	rss   *procstat.Watch
	heap0 uint64
}

func watchMem() *memWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &memWatch{heap0: ms.HeapInuse, rss: procstat.WatchRSS(0)}
}

// end returns the peak RSS growth and the heap growth after GC (bytes).
func (w *memWatch) end() (rss, heap int64) {
	peak := w.rss.Stop()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return peak - w.rss.Base, int64(ms.HeapInuse) - int64(w.heap0)
}

func fsize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// benchAttackBridge measures the bridge's rows.
func benchAttackBridge(o *Options, rep *Report) {
	hellos, rate := 40000, 4000
	if o.Quick {
		hellos = 4000
	}
	_, msg, err := runScoped("attack-bridge-dtls", func(t testing.TB) {
		reg, err := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := registry.Provision(reg, nil, registry.Request{Name: "sensor-17"})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := coap.New(coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve() }()
		t.Cleanup(func() { srv.Close(); srv.Wait() })
		opts := coaptest.Options{Identity: "sensor-17", Key: p.Endpoint.PSK}
		if d, err := coaptest.Dial(t, srv.Addr().String(), opts); err == nil { // warm-up
			_ = d.Conn.Close()
		}
		w := watchMem()
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(srv.Addr().String()))
		half := make(chan struct{})
		sentc := make(chan int, 1)
		go func() { sentc <- coaptest.SpoofedHelloFlood(t, to, hellos, rate, half) }()
		<-half
		s0 := time.Now()
		d, derr := coaptest.Dial(t, srv.Addr().String(), opts)
		took := time.Since(s0)
		if derr == nil {
			_ = d.Conn.Close()
		}
		sent := <-sentc
		rss, heap := w.end()
		row := AttackRow{Target: "bridge",
			Attack: fmt.Sprintf("spoofed DTLS ClientHello flood: %d well-formed first hellos at %d/s, each from its own 127.x source (finding 2; TestAttackClientHelloFlood, real bridge: e2e TestAttackDTLSFloodRealBridge)", hellos, rate),
			Bound:  "RSS growth < 64 MB; a real device completes its handshake during the flood",
		}
		if derr != nil {
			row.Measured = fmt.Sprintf("device handshake failed: %v", derr)
		} else {
			row.Measured = fmt.Sprintf("%d sent, %d answered statelessly (HelloVerifyRequest), %d pending handshakes; device handshake in %v mid-flood; process RSS peak %+.1f MB, heap after GC %+.1f MB",
				sent, srv.Stats.HelloVerifySent.Load(), srv.PendingHandshakes(), took.Round(time.Millisecond), float64(rss)/(1<<20), float64(heap)/(1<<20))
			row.Held = rss < dtlsFloodRSSBound
		}
		rep.attack(row)
	})
	if err != nil {
		rep.attack(AttackRow{Target: "bridge", Attack: "DTLS ClientHello flood", Err: err.Error()})
	} else if msg != "" {
		rep.note("attack-bridge: %s", msg)
	}

	dev := mqtttest.Device{Name: "sensor-1", Password: "pw1"}
	scale := func(n int) int {
		if o.Quick {
			return max(1, n/5)
		}
		return n
	}
	floods := []struct {
		name, finding string
		run           func(t testing.TB, addr string) (string, func())
		counter       func(*mqtt.Stats) (string, uint64)
	}{
		{"topic aliases", "finding 3", func(t testing.TB, a string) (string, func()) { return dev.Aliases(t, a, scale(1000)), func() {} },
			func(s *mqtt.Stats) (string, uint64) { return "alias_refused", s.AliasRefused.Load() }},
		{"20 KB topics with aliases", "finding 3", func(t testing.TB, a string) (string, func()) { return dev.LongTopics(t, a, scale(500)), func() {} },
			func(s *mqtt.Stats) (string, uint64) { return "topic_too_long", s.TopicTooLong.Load() }},
		{"retained messages", "finding 3", func(t testing.TB, a string) (string, func()) {
			return dev.Retained(t, a, scale(600), 200<<10), func() {}
		}, func(s *mqtt.Stats) (string, uint64) { return "retain_dropped", s.RetainDropped.Load() }},
		{"subscriptions", "issue 18", func(t testing.TB, a string) (string, func()) { return dev.Subscriptions(t, a, scale(50)), func() {} },
			func(s *mqtt.Stats) (string, uint64) { return "subscription_refused", s.SubscriptionsRefused.Load() }},
		{"connections without CONNECT", "finding 3", func(t testing.TB, a string) (string, func()) {
			return mqtttest.IdleConnections(t, a, scale(3000))
		}, func(s *mqtt.Stats) (string, uint64) {
			return "pending_connect_refused", s.PendingConnectRefused.Load() + s.PendingConnectRefusedSource.Load()
		}},
	}
	for _, f := range floods {
		_, msg, err := runScoped("attack-bridge-mqtt", func(t testing.TB) {
			pki := realpeer.NewTLSCA(t, "bench site CA")
			db := filepath.Join(t.TempDir(), "mqtt-sessions.db")
			b, err := mqtt.New(mqtt.Config{TLSAddr: "127.0.0.1:0", TLS: pki.ServerTLS(t, "127.0.0.1"), SessionDB: db,
				Auth: mqtt.StaticAuth{Passwords: map[string]string{dev.Name: dev.Password}}, Upstream: dropUpstream{}, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			addr := b.TLSAddr().String()
			_ = dev.Dial(t, addr, 5).Close() // warm-up
			disk0 := fsize(db)
			w := watchMem()
			what, release := f.run(t, addr)
			time.Sleep(300 * time.Millisecond)
			rss, heap := w.end()
			release()
			disk := fsize(db) - disk0
			name, n := f.counter(b.Stats())
			rep.attack(AttackRow{Target: "bridge",
				Attack:   fmt.Sprintf("one MQTT device against the site broker (relay replaced by a sink): %s (%s; TestAttackDeviceFloods, real bridge: e2e TestAttackMQTTDeviceFloodsRealBridge)", what, f.finding),
				Bound:    "RSS growth < 32 MB; session store growth < 8 MB",
				Measured: fmt.Sprintf("process RSS peak %+.1f MB, heap after GC %+.1f MB; session store %+d KB; %s %d", float64(rss)/(1<<20), float64(heap)/(1<<20), disk>>10, name, n),
				Held:     rss < deviceFloodRSSBound && disk < deviceFloodDisk && n > 0,
			})
		})
		if err != nil {
			rep.attack(AttackRow{Target: "bridge", Attack: "MQTT " + f.name, Err: err.Error()})
		} else if msg != "" {
			rep.note("attack-bridge: %s", msg)
		}
	}
}

// dropUpstream takes every device message and keeps nothing (the bridge's
// relay and spool have their own bounds: bridge/spool).
type dropUpstream struct{}

func (dropUpstream) Publish(string, mqtt.Message) error { return nil }
