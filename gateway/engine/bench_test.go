package engine_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// countHost is a data plane host that counts what the router hands it.
type countHost struct {
	n, bytes atomic.Uint64
	credits  chan struct{} // one per delivered packet, for flow control
	done     chan struct{}
	once     sync.Once
}

func newCountHost() *countHost {
	return &countHost{done: make(chan struct{}), credits: make(chan struct{}, 256)}
}

func (h *countHost) WritePacket(p []byte) error {
	h.n.Add(1)
	h.bytes.Add(uint64(len(p)))
	select {
	case h.credits <- struct{}{}:
	default:
	}
	return nil
}
func (h *countHost) ReadPacket([]byte) (int, error) { <-h.done; return 0, io.EOF }
func (h *countHost) MTU() int                       { return 1500 }
func (h *countHost) Close() error                   { h.once.Do(func() { close(h.done) }); return nil }

const benchPacing = "pacing: {per_source_rate: 100000, per_source_burst: 100000, global_rate: 100000, global_burst: 100000}\n" +
	"policy: {default: allow}\n"

// startBenchGateway runs the daemon core with the engine and a counting
// host (no netstack in the measurement).
func startBenchGateway(b *testing.B, pool, extra string) (*gateway, *countHost) {
	b.Helper()
	host := newCountHost()
	cfg := parseConfigPool(b, pool, extra+benchPacing)
	eng := engine.New(engine.Config{IKEConn: udpConn(b), NATTConn: udpConn(b), RatePerSource: 100000, BurstPerSource: 100000, MaxHalfOpen: 4096})
	srv, err := server.New(cfg, server.Options{Engine: eng, Host: host})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{srv: srv, eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	b.Cleanup(g.stop)
	<-eng.Ready()
	return g, host
}

// BenchmarkForward1400 sends 1400-byte UDP packets through the whole
// session: client PPP → L2TP → ESP (aes128gcm16) → UDP loopback → gateway
// ESP → L2TP → PPP → router (policy, counters) → host.
func BenchmarkForward1400(b *testing.B) {
	g, host := startBenchGateway(b, "10.10.0.0/24", "")
	tn, _ := dial(b, g.clientConfig("hall7", "pw7"))
	waitFor(b, "registered", func() bool { return g.srv.Env().Sessions.Len() == 1 })
	pkt := pkttest.UDP(netip.AddrPortFrom(tn.LocalAddr(), 40000), netip.AddrPortFrom(central, 7), make([]byte, 1400-28))
	b.SetBytes(int64(len(pkt)))
	// At most 256 packets in flight: the host hands credits back, a lost
	// packet's credit comes back after 50ms (as uplink/l2tpipsec's pump).
	for range 256 {
		host.credits <- struct{}{}
	}
	b.ResetTimer()
	start := host.n.Load()
	t0 := time.Now()
	for range b.N {
		select {
		case <-host.credits:
		case <-time.After(50 * time.Millisecond):
		}
		if err := tn.WritePacket(pkt); err != nil {
			b.Fatal(err)
		}
	}
	// Let the tail drain before counting deliveries.
	deadline := time.Now().Add(2 * time.Second)
	for host.n.Load()-start < uint64(b.N) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(host.n.Load()-start)/el.Seconds(), "pkts/s")
	b.ReportMetric(float64(host.n.Load()-start)/float64(b.N)*100, "%delivered")
	st := g.eng.Tunnel().Stats()
	var drops []string
	for r := dataplane.Reason(0); r.String() != ""; r++ {
		if n := g.srv.Router().Stats.Drops(r); n > 0 {
			drops = append(drops, fmt.Sprintf("%v=%d", r, n))
		}
		if r > 20 {
			break
		}
	}
	b.Logf("router drops %v; esp in %d, queue drops %d, open failures %d; l2tp data dropped %d", drops,
		st.Transport.ESPIn.Load(), st.Transport.QueueDrops.Load(), st.Transport.OpenFailures.Load(), st.L2TP.DataDropped.Load())
}

// BenchmarkSetup measures complete session set-ups (Main Mode with
// modp2048, Quick Mode, L2TP, PPP MS-CHAPv2, IPCP, Register) one after
// another, each closed after it came up.
func BenchmarkSetup(b *testing.B) {
	g, _ := startBenchGateway(b, "10.10.0.0/24", "")
	cc := g.clientConfig("hall7", "pw7")
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tn, err := l2tpipsec.Dial(ctx, cc)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		_ = tn.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "setups/s")
}

// BenchmarkIdleSessionMemory brings up 1000 idle sessions (100 with
// -short) and reports the gateway's heap growth per session. The clients
// run in a child process (this test binary, TestHelperClients), so the
// figure is the gateway side alone: IKE SA, ESP SA pair, L2TP tunnel and
// session, PPP, session table, router counters.
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	ids := ""
	for i := range n {
		ids += fmt.Sprintf("  - {name: s%d, ppp: {password: pw}}\n", i)
	}
	g, _ := startBenchGateway(b, "10.12.0.0/20", ids)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	ts := g.eng.Tunnel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClients$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), "H11_CLIENTS="+strconv.Itoa(n), "H11_IKE="+ts.IKEAddr().String(),
		"H11_NATT="+strconv.Itoa(int(ts.NATTAddr().Port())))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	deadline := time.Now().Add(8 * time.Minute)
	for g.srv.Env().Sessions.Len() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions registered", g.srv.Env().Sessions.Len(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n)
	b.ReportMetric(per/1024, "KB/session")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/session")
	for range b.N {
	}
}

// TestHelperClients is the client side of BenchmarkIdleSessionMemory (it
// does nothing unless H11_CLIENTS is set): it dials the sessions, keeps
// them idle and exits when its stdin closes.
func TestHelperClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("H11_CLIENTS"))
	if n == 0 {
		return
	}
	natt, _ := strconv.Atoi(os.Getenv("H11_NATT"))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cc := l2tpipsec.ClientConfig{
				Gateway: os.Getenv("H11_IKE"), NATTPort: uint16(natt),
				LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0", PSK: []byte(testPSK),
				LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: fmt.Appendf(nil, "s%d.sites.example", i)},
				Username: fmt.Sprintf("s%d", i), Password: "pw",
				IKEOptions: l2tpipsec.IKEOptions{ESPProposals: "aes128gcm16", DPDInterval: -1, KeepaliveInterval: -1},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := l2tpipsec.Dial(ctx, cc); err != nil {
				failed.Add(1)
				t.Logf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d set-ups failed", f, n)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}
