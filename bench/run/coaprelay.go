package run

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// centralCoAP is the central CoAP service in the far stack of the relay
// measurement.
var centralCoAP = netip.MustParseAddrPort("10.20.0.1:5683")

// serveSink answers every confirmable request on pc with an ACK 2.04
// Changed echoing its message ID and token (libcoap's PUT /example_data
// answers the same code), and counts them. Undecodable datagrams are
// counted and dropped.
func serveSink(pc net.PacketConn, n, bad *atomic.Uint64) {
	buf := make([]byte, 2048)
	out := make([]byte, 64)
	m := message.Message{Options: make(message.Options, 0, 32)}
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if _, err := coder.DefaultCoder.Decode(buf[:k], &m); err != nil || m.Type != message.Confirmable {
			bad.Add(1)
			continue
		}
		r := message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: m.Token}
		w, err := coder.DefaultCoder.Encode(r, out)
		if err != nil {
			bad.Add(1)
			continue
		}
		n.Add(1)
		_, _ = pc.WriteTo(out[:w], from)
	}
}

// latencies collects per-request round trips from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) { l.mu.Lock(); l.d = append(l.d, d...); l.mu.Unlock() }

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// relaySample runs every device in a closed loop (one CON PUT
// /example_data at a time each, at most inflight fleet-wide: more
// overflows the servers' default UDP receive buffers, 208 KB here, and
// turns the figure into CoAP's 2 s retransmission timer) for dur and
// counts completed exchanges;
// only 2.04 answers count, others fail the sample. extraCPU adds the CPU
// of a server in another process.
func relaySample(conns []*devConn, inflight int, dur time.Duration, extraCPU func() time.Duration, lat *latencies) (Sample, error) {
	sem := make(chan struct{}, inflight)
	payload := []byte(`[{"n":"temp","u":"Cel","v":21.5}]`)
	var done, failed atomic.Uint64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	cpu0, x0 := cpuTime(), extraCPU()
	t0 := time.Now()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 256)
			defer func() { lat.add(local) }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				select {
				case <-stop:
					return
				case sem <- struct{}{}:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s := time.Now()
				resp, err := c.cc.Put(ctx, "/example_data", message.TextPlain, bytes.NewReader(payload))
				cancel()
				<-sem
				if err == nil && resp.Code() != codes.Changed && resp.Code() != codes.Created {
					err = fmt.Errorf("got %v, want 2.04 or 2.01", resp.Code())
				}
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err)
					}
					return
				}
				select {
				case <-stop: // finished after the window: not counted
					return
				default:
				}
				local = append(local, time.Since(s))
				done.Add(1)
			}
		}()
	}
	time.Sleep(dur)
	n := done.Load()
	el := time.Since(t0)
	close(stop)
	cpu := cpuTime() - cpu0 + extraCPU() - x0
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return Sample{}, fmt.Errorf("%d devices failed, first: %v", f, firstErr.Load())
	}
	if n == 0 {
		return Sample{}, fmt.Errorf("no request completed in %v", dur)
	}
	return Sample{Rate: float64(n) / el.Seconds(), CPUPerOp: cpu / time.Duration(n)}, nil
}

// seqLatency measures unloaded round trips: one device, one request at a
// time, n requests.
func seqLatency(c *devConn, n int) ([]time.Duration, error) {
	payload := []byte(`[{"n":"temp","u":"Cel","v":21.5}]`)
	d := make([]time.Duration, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s := time.Now()
		resp, err := c.cc.Put(ctx, "/example_data", message.TextPlain, bytes.NewReader(payload))
		cancel()
		if err != nil {
			return nil, err
		}
		if resp.Code() != codes.Changed && resp.Code() != codes.Created {
			return nil, fmt.Errorf("got %v, want 2.04 or 2.01", resp.Code())
		}
		d = append(d, time.Since(s))
	}
	return d, nil
}

// benchCoAPRelay is measurement 5: CoAP requests/s device → central with
// o.Devices simulated PSK devices (pion/dtls v3 + go-coap v3 clients,
// TLS_PSK_WITH_AES_128_CCM_8), relayed by the bridge (downlink/coap +
// bridge/proxy + ipstack, the central sink in a second netstack behind an
// in-memory link) vs the same devices talking to libcoap's
// coap-server-openssl directly (per-identity keys via -i).
func benchCoAPRelay(o *Options, rep *Report) {
	title := fmt.Sprintf("Bridge CoAP relay, device → central (%d devices, CON PUT, %d in flight)", o.Devices, o.InFlight)
	_, msg, err := runScoped("coap", func(t testing.TB) {
		n := o.Devices
		devs := makeFleet(n)
		reg, _, err := fleetRegistry(t.TempDir(), devs)
		if err != nil {
			t.Fatal(err)
		}
		// pprof label side=bridge on everything the bridge and the central
		// sink run (goroutines inherit it), so a -cpuprofile splits the
		// relay's own cost from the devices'.
		var b *bridgeSide
		var sinkN, sinkBad atomic.Uint64
		var pc net.PacketConn
		pprof.Do(context.Background(), pprof.Labels("side", "bridge"), func(context.Context) {
			if b, err = newBridgeSide(reg, "127.0.0.1:0", centralCoAP); err != nil {
				return
			}
			if pc, err = b.cen.ListenUDP(centralCoAP); err != nil {
				return
			}
			go serveSink(pc, &sinkN, &sinkBad)
		})
		if b != nil {
			t.Cleanup(b.close)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })

		// libcoap: per-identity keys ("hint,identity,key" lines; the
		// server's default hint is "CoAP").
		var ids strings.Builder
		for _, d := range devs {
			fmt.Fprintf(&ids, "CoAP,%s,%s\n", d.Name, d.Key)
		}
		idFile := filepath.Join(t.TempDir(), "ids")
		if err := os.WriteFile(idFile, []byte(ids.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		var lc *realpeer.CoAPServer
		libReason := skipReason(func(t testing.TB) { testenv.RequireBinary(t, "coap-server-openssl") })
		if libReason == "" {
			lc = realpeer.StartCoAPServer(t, nil, realpeer.CoAPServerConfig{PSK: "unused-default-key", Extra: []string{"-i", idFile, "-v", "3"}})
		}

		bAddr := b.srv.Addr().(*net.UDPAddr)
		t0 := time.Now()
		bConns, err := dialFleet(devs, net.IPv4(127, 0, 0, 1), bAddr, 8, true)
		if err != nil {
			t.Fatalf("bridge: %v", err)
		}
		t.Cleanup(func() { closeFleet(bConns) })
		rep.note("coap: %d devices connected to the bridge in %v (8 handshakes in flight)", n, time.Since(t0).Round(time.Millisecond))
		var lConns []*devConn
		if lc != nil {
			t0 = time.Now()
			lConns, err = dialFleet(devs, net.IPv4(127, 0, 0, 1), net.UDPAddrFromAddrPort(lc.DTLSAddr), 8, true)
			if err != nil {
				t.Fatalf("libcoap: %v\n%s", err, tail(lc.Proc.Output(), 2000))
			}
			t.Cleanup(func() { closeFleet(lConns) })
			rep.note("coap: %d devices connected to coap-server-openssl in %v", n, time.Since(t0).Round(time.Millisecond))
		}
		none := func() time.Duration { return 0 }
		var bLat, lLat latencies
		names := []string{"bridge (downlink/coap + proxy + ipstack)", "libcoap coap-server-openssl direct"}
		runs := []func() (Sample, error){
			func() (Sample, error) { return relaySample(bConns, o.InFlight, o.Dur, none, &bLat) },
			func() (Sample, error) {
				if lc == nil {
					return Sample{}, fmt.Errorf("skipped: %s", libReason)
				}
				return relaySample(lConns, o.InFlight, o.Dur, func() time.Duration { return treeCPU(lc.Proc.PID) }, &lLat)
			},
		}
		rb0 := rcvbufErrors()
		rows := alternate(o.Reps, names, runs)
		logf("coap: bridge st out %d in %d, central out %d in %d, sink %d bad %d, link drops %d, proxy up %d err %d", b.st.Stats.PacketsOut.Load(), b.st.Stats.PacketsIn.Load(),
			b.cen.Stats.PacketsOut.Load(), b.cen.Stats.PacketsIn.Load(), sinkN.Load(), sinkBad.Load(), b.link.dropped(), b.px.Stats.Upstream.Load(), b.px.Stats.UpstreamErrors.Load())
		rep.add(title, "requests/s", rows)
		g := rep.find(title)
		rep.ratio(title, "bridge relay / libcoap direct (requests/s)", rows, names[0], names[1], 0)
		for _, r := range rows {
			if r.Name == names[0] && r.Err == "" {
				g.ratios = append(g.ratios, ratio{label: "bridge relay requests/s / 35k goal", value: r.Median.Rate / 35000, goal: 1, ok: r.Median.Rate >= 35000})
				fmt.Printf("  bridge relay: %.0f requests/s (goal >= 35000: %s)\n", r.Median.Rate, okWord(r.Median.Rate >= 35000))
			}
		}
		loaded := fmt.Sprintf("coap: round trip under load (%d devices, %d requests in flight): bridge p50 %v p99 %v",
			n, o.InFlight, pct(bLat.d, 0.5).Round(10*time.Microsecond), pct(bLat.d, 0.99).Round(10*time.Microsecond))
		if len(lLat.d) > 0 {
			loaded += fmt.Sprintf(", libcoap direct p50 %v p99 %v", pct(lLat.d, 0.5).Round(10*time.Microsecond), pct(lLat.d, 0.99).Round(10*time.Microsecond))
		}
		rep.note("%s", loaded)
		// Unloaded: one device, sequential requests, alternating sides.
		const seqN = 300
		var bSeq, lSeq []time.Duration
		for range 3 {
			d, err := seqLatency(bConns[0], seqN)
			if err != nil {
				t.Fatalf("bridge latency: %v", err)
			}
			bSeq = append(bSeq, d...)
			if lc != nil {
				d, err := seqLatency(lConns[0], seqN)
				if err != nil {
					t.Fatalf("libcoap latency: %v", err)
				}
				lSeq = append(lSeq, d...)
			}
		}
		if lc != nil {
			rep.note("coap: unloaded round trip (1 device, %d sequential requests per side, 3 alternating rounds): bridge p50 %v p99 %v, libcoap direct p50 %v p99 %v; added by the relay: p50 %v, p99 %v",
				seqN, pct(bSeq, 0.5).Round(time.Microsecond), pct(bSeq, 0.99).Round(time.Microsecond),
				pct(lSeq, 0.5).Round(time.Microsecond), pct(lSeq, 0.99).Round(time.Microsecond),
				(pct(bSeq, 0.5) - pct(lSeq, 0.5)).Round(time.Microsecond), (pct(bSeq, 0.99) - pct(lSeq, 0.99)).Round(time.Microsecond))
		} else {
			rep.note("coap: unloaded round trip through the bridge p50 %v p99 %v", pct(bSeq, 0.5).Round(time.Microsecond), pct(bSeq, 0.99).Round(time.Microsecond))
		}
		rep.note("coap: %d devices, %v per sample; bridge counted %d requests, %d rate-limited; proxy %d upstream (%d errors); central sink answered %d (%d undecodable); in-memory link dropped %d packets; host UDP receive-buffer drops during the samples %d (whole machine); device-side CoAP errors %d",
			n, o.Dur, b.srv.Stats.Requests.Load(), b.srv.Stats.RateLimited.Load(), b.px.Stats.Upstream.Load(), b.px.Stats.UpstreamErrors.Load(),
			sinkN.Load(), sinkBad.Load(), b.link.dropped(), rcvbufErrors()-rb0, devErrors.Load())
	})
	if err != nil {
		rep.note("coap failed: %v", err)
	} else if msg != "" {
		rep.note("coap: %s", msg)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// rcvbufErrors is the host's UdpRcvbufErrors counter (/proc/net/snmp).
func rcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				var v uint64
				fmt.Sscanf(f[i], "%d", &v)
				return v
			}
		}
	}
	return 0
}
