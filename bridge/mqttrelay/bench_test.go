package mqttrelay

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// benchDevices is the number of simulated devices (FLEETGATE_BENCH_DEVICES,
// default 100; the figure is for 2000).
func benchDevices() int {
	if n, err := strconv.Atoi(os.Getenv("FLEETGATE_BENCH_DEVICES")); err == nil && n > 0 {
		return n
	}
	return 100
}

// latencySink is a central subscriber that timestamps arrivals of payloads
// "<unix nanos sent>".
type latencySink struct {
	mu   sync.Mutex
	lat  []time.Duration
	last time.Time
	n    atomic.Int64
}

func startSink(b *testing.B, addr string, qos byte) (*latencySink, func()) {
	s := &latencySink{}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-sink").SetOrderMatters(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("sink connect: %v", tok.Error())
	}
	tok := c.Subscribe("sites/s1/#", qos, func(_ paho.Client, m paho.Message) {
		sent, err := strconv.ParseInt(string(m.Payload()), 10, 64)
		if err != nil {
			return
		}
		now := time.Now()
		s.mu.Lock()
		s.lat = append(s.lat, now.Sub(time.Unix(0, sent)))
		s.last = now
		s.mu.Unlock()
		s.n.Add(1)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("sink subscribe: %v", tok.Error())
	}
	return s, func() { c.Disconnect(0) }
}

func (s *latencySink) percentile(p float64) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lat) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), s.lat...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[int(p*float64(len(l)-1))]
}

// BenchmarkRelay measures device -> central messages per second and
// latency, through the bridge (site broker + spool + relay) and, as the
// baseline, with the same devices publishing straight to the central
// mosquitto. b.N messages are spread over the devices; each device
// publishes its share back to back (QoS 1: waits for each PUBACK).
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 20000x ./bridge/mqttrelay
func BenchmarkRelay(b *testing.B) {
	for _, path := range []string{"direct", "bridge"} {
		for _, qos := range []byte{0, 1} {
			b.Run(fmt.Sprintf("%s/qos%d", path, qos), func(b *testing.B) { benchRelay(b, path == "bridge", qos, benchDevices()) })
		}
	}
}

// BenchmarkRelayLatency measures the latency one QoS 1 device sees when it
// publishes one message at a time (no queueing): through the bridge versus
// straight to the central broker; the difference is the added latency.
//
//	go test -run '^$' -bench BenchmarkRelayLatency -benchtime 2000x ./bridge/mqttrelay
func BenchmarkRelayLatency(b *testing.B) {
	for _, path := range []string{"direct", "bridge"} {
		b.Run(path, func(b *testing.B) { benchRelay(b, path == "bridge", 1, 1) })
	}
}

func benchRelay(b *testing.B, viaBridge bool, qos byte, nDev int) {
	central := startMosquitto(b)
	sink, stopSink := startSink(b, central.addr, qos)
	defer stopSink()
	target := central.addr
	var st *site
	if viaBridge {
		port := realpeer.FreePort(b)
		pw := map[string]string{}
		for i := 1; i <= nDev; i++ {
			pw[fmt.Sprintf("sensor-%d", i+200)] = "p"
		}
		st = startSite(b, siteConfig{spoolDir: b.TempDir(), central: central.addr,
			plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), passwords: pw, spoolMax: 256 << 20})
		defer st.kill()
		target = st.broker.PlainAddr().String()
	}
	clients := make([]paho.Client, nDev)
	var wg sync.WaitGroup
	errs := make(chan error, nDev)
	for i := range clients {
		ep := fmt.Sprintf("sensor-%d", i+201)
		o := paho.NewClientOptions().AddBroker("tcp://" + target).SetClientID(ep).SetUsername(ep).SetPassword("p").
			SetCleanSession(true).SetAutoReconnect(false)
		clients[i] = paho.NewClient(o)
		wg.Add(1)
		go func(c paho.Client) {
			defer wg.Done()
			if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("device connect: %v", tok.Error())
			}
		}(clients[i])
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	per := (b.N + nDev - 1) / nDev
	total := per * nDev
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func(i int, c paho.Client) {
			defer wg.Done()
			topic := "telemetry/bench"
			if !viaBridge {
				topic = fmt.Sprintf("sites/s1/sensor-%d/telemetry/bench", i+201)
			}
			for k := 0; k < per; k++ {
				tok := c.Publish(topic, qos, false, strconv.FormatInt(time.Now().UnixNano(), 10))
				if qos > 0 {
					tok.Wait()
				}
			}
		}(i, c)
	}
	wg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for sink.n.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for the central subscriber
	}
	b.StopTimer()
	sink.mu.Lock()
	elapsed := sink.last.Sub(start)
	sink.mu.Unlock()
	got := sink.n.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(sink.percentile(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(sink.percentile(0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(total-int(got)), "lost")
	b.ReportMetric(float64(nDev), "devices")
	if qos > 0 && got < int64(total) {
		b.Errorf("QoS %d: %d of %d messages arrived", qos, got, total)
	}
}

// BenchmarkReplayAfterOutage measures how fast a backlog drains when the
// central broker becomes reachable: b.N QoS 1 messages over the devices are
// in the spool, then the relay starts; the time until the central broker
// acknowledged all of them gives the replay rate.
//
//	go test -run '^$' -bench BenchmarkReplayAfterOutage -benchtime 20000x ./bridge/mqttrelay
func BenchmarkReplayAfterOutage(b *testing.B) {
	central := startMosquitto(b)
	sink, stopSink := startSink(b, central.addr, 1)
	defer stopSink()
	sp, err := spool.Open(spool.Config{Dir: b.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	nDev := benchDevices()
	for i := 0; i < b.N; i++ {
		ep := fmt.Sprintf("sensor-%d", 201+i%nDev)
		if _, err := sp.Append(spool.Message{Endpoint: ep, Topic: "telemetry/bench", QoS: 1,
			Payload: []byte(strconv.FormatInt(time.Now().UnixNano(), 10))}); err != nil {
			b.Fatal(err)
		}
	}
	r, err := New(Config{Site: "s1", Server: netip.MustParseAddrPort(central.addr), AddrOf: addrOf, Spool: sp})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	start := time.Now()
	if err := r.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	for (sp.Stats().Queued.Load() > 0 || sink.n.Load() < int64(b.N)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // waiting for the drain
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if q := sp.Stats().Queued.Load(); q > 0 {
		b.Fatalf("%d messages still queued", q)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "replayed-msgs/s")
	b.ReportMetric(float64(nDev), "devices")
}
