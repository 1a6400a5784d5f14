package suite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fsdevice "github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/internal/ctxsleep"
)

// perChild is how many device sockets one client process holds: the hard
// descriptor limit here is 20000 per process, so 100k endpoints need
// several processes (each on its own loopback source address, so the
// ephemeral ports do not run out either).
const perChild = 15000

// deviceChildren starts client processes (this command with
// -helper-devices) that together connect devs[0:n] to dst, handshake only,
// par handshakes in flight per process, and keep the sessions idle until
// the returned stop is called. reconnect makes them re-dial (with the
// firmware-sim backoff) whenever a session ends or redial is called.
//
// ping makes every device ping its session and re-dial if that is not
// answered (CoAP retransmissions: up to 2+4+8+16+32 s).
func deviceChildren(t testing.TB, stateFile string, n int, dst string, par int, reconnect bool) (stop, redial, ping func()) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	var stdins []io.WriteCloser
	for k := 0; k*perChild < n; k++ {
		start, cnt := k*perChild, min(perChild, n-k*perChild)
		spec := fmt.Sprintf("%s:%d:%d:127.1.%d.1:%s:%d:%t", stateFile, start, cnt, k, dst, par, reconnect)
		cmd := exec.Command(exe, "-helper-devices", spec)
		in, _ := launch(t, cmd, false)
		cmds, stdins = append(cmds, cmd), append(stdins, in)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, in := range stdins {
				in.Close()
			}
			for _, cmd := range cmds {
				waitOrKill(cmd, 20*time.Second)
			}
		})
	}
	t.Cleanup(stop)
	redial = func() {
		for _, in := range stdins {
			_, _ = io.WriteString(in, "redial\n")
		}
	}
	ping = func() {
		for _, in := range stdins {
			_, _ = io.WriteString(in, "ping\n")
		}
	}
	return stop, redial, ping
}

// helperDevices is the child side: spec is
// state-file:start:count:source-ip:dst-host:dst-port:par:reconnect.
func helperDevices(spec string) int {
	cs, code := parseDeviceChildSpec("helper-devices", spec, 8)
	if code != 0 {
		return code
	}
	par, _ := strconv.Atoi(cs.rest[0])
	reconnect := cs.rest[1] == "true"
	devs, src, dst := cs.devs, cs.src, cs.dst
	ctx, cancel := context.WithCancel(context.Background())
	var failed, redials atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keepDevice(ctx, src, dst, d, sem, reconnect, &failed, &redials)
		}()
	}
	// Each "redial" line makes every device drop its session and dial
	// again (a bridge restart the devices have noticed); EOF ends.
	// "ping" makes every device send a CoAP ping (an empty CON) on its
	// session, retransmitted as RFC 7252 says, and re-dial if no answer
	// comes (a restarted bridge that restored its sessions answers; one
	// that did not drops it).
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "redial":
			old := redialCh.Swap(newSignal())
			close(*old)
		case "ping":
			old := pingCh.Swap(newSignal())
			close(*old)
		}
	}
	cancel()
	wg.Wait()
	if f := failed.Load(); f > 0 {
		logf("helper-devices %s: %d handshakes failed, %d re-dials", spec, f, redials.Load())
	}
	return 0
}

// redialCh and pingCh are closed (and replaced) when the parent asks every
// device to dial again or to ping its session.
var redialCh, pingCh atomic.Pointer[chan struct{}]

func newSignal() *chan struct{} { c := make(chan struct{}); return &c }

func init() { redialCh.Store(newSignal()); pingCh.Store(newSignal()) }

// keepDevice dials d (holding a slot of sem during the handshake) and, if
// reconnect, dials again after its session ends, waiting 50 ms–5 s of
// equal-jitter backoff between attempts (firmware-sim's device policy,
// with a short minimum). It returns when ctx ends.
func keepDevice(ctx context.Context, src net.IP, dst *net.UDPAddr, d fleetDev, sem chan struct{}, reconnect bool, failed, redials *atomic.Int64) {
	bo := fsdevice.NewBackoff(50*time.Millisecond, 5*time.Second, rand.New(rand.NewPCG(rand.Uint64(), 1)))
	first := true
	for ctx.Err() == nil {
		if !first {
			redials.Add(1)
		}
		first = false
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := dialDev(hctx, src, dst, d, false)
		cancel()
		<-sem
		if err != nil {
			failed.Add(1)
			if !reconnect || !ctxsleep.Sleep(ctx, bo.Next()) {
				return
			}
			continue
		}
		bo.Reset()
		if !reconnect {
			<-ctx.Done()
			c.close()
			return
		}
		// A session ends when the bridge closes it (close_notify: the
		// device notices at once), when the parent says the bridge
		// restarted (a device notices that at its next request), or when a
		// ping the parent asked for is not answered.
		redial, ping := *redialCh.Load(), *pingCh.Load()
		closed := make(chan struct{})
		got := make(chan struct{}, 1)
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, err := c.dc.Read(buf); err != nil {
					close(closed)
					return
				}
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}()
		mid := uint16(rand.Uint32())
	wait:
		for {
			select {
			case <-ctx.Done():
				c.close()
				<-closed
				return
			case <-closed:
				c.close()
				break wait
			case <-redial:
				c.close()
				<-closed
				break wait
			case <-ping:
				ping = *pingCh.Load()
				select {
				case <-got:
				default:
				}
				mid++
				if pingSession(ctx, c, mid, got, closed) {
					continue
				}
				c.close()
				<-closed
				break wait
			}
		}
		if !ctxsleep.Sleep(ctx, bo.Next()) {
			return
		}
	}
}

// pingSession sends a CoAP ping (version 1, CON, no token, code 0.00, RFC
// 7252 section 4.3) on c and retransmits it as a CoAP client does (section
// 4.2: initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT x 1.5] = [2 s,
// 3 s], doubling, MAX_RETRANSMIT 4); it reports whether an answer came
// (false: the session is gone, dial again).
func pingSession(ctx context.Context, c *devConn, mid uint16, got, closed <-chan struct{}) bool {
	timeout := 2*time.Second + time.Duration(rand.Int64N(int64(time.Second)))
	for try := 0; try <= 4; try++ {
		if _, err := c.dc.Write([]byte{0x40, 0, byte(mid >> 8), byte(mid)}); err != nil {
			return false
		}
		t := time.NewTimer(timeout)
		select {
		case <-got:
			t.Stop()
			return true
		case <-closed:
			t.Stop()
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		timeout *= 2
	}
	return false
}

// settle waits (up to 30 s) until the goroutines and heap left by an
// earlier measurement have gone: the goroutine count unchanged and the
// heap within 1 % over half a second, so they do not distort a baseline.
func settle() {
	deadline := time.Now().Add(30 * time.Second)
	m0, g0 := memStat()
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		m1, g1 := memStat()
		if g1 == g0 && (m1 > m0 && m1-m0 < m0/100 || m1 <= m0 && m0-m1 < m0/100) {
			return
		}
		m0, g0 = m1, g1
	}
	logf("settle: heap and goroutines still moving after 30 s")
}

// memStat is heap in use plus goroutine stacks.
func memStat() (uint64, int) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse, runtime.NumGoroutine()
}

// bridgeParkAfter is coap.Config.ParkAfter in the bench bridges: idle
// sessions park after 2 s instead of the default 60 s, so the memory
// measurement need not wait a minute for the steady state.
var bridgeParkAfter = 2 * time.Second

// benchEndpoints is measurement 6: bridge memory per idle endpoint. The
// bridge (downlink/coap + proxy + ipstack, as in the relay measurement)
// holds every endpoint registered (its address and CoAP listener in the
// stack) and one idle DTLS session per endpoint; the devices live in
// child processes so only the bridge's memory is counted.
func benchEndpoints(o *Options, rep *Report) {
	const title = "Bridge memory per idle endpoint (registered + idle DTLS PSK session; heap + stacks)"
	var rows []Row
	gper := map[string]float64{} // goroutines per endpoint, by row
	for _, n := range o.Endpoints {
		row := Row{Name: fmt.Sprintf("%d endpoints", n)}
		_, msg, err := runScoped("endpoints", func(t testing.TB) {
			devs := makeFleet(n)
			dir := t.TempDir()
			settle()
			mem0, g0 := memStat()
			reg, path, err := fleetRegistry(dir, devs)
			if err != nil {
				t.Fatal(err)
			}
			memReg, _ := memStat()
			b, err := newBridgeSide(reg, "127.0.0.1:0", centralCoAP)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.close)
			mem1, g1 := memStat()
			t0 := time.Now()
			stop, _, _ := deviceChildren(t, path, n, b.srv.Addr().String(), 8, false)
			// Wait for every session, or until the count has not moved
			// for 20 s (a handshake the client finished but the server
			// gave up on leaves a device without a session).
			sessions := func() int { live, parked := b.srv.Count(); return live + parked }
			last, lastChange := 0, time.Now()
			for {
				k := sessions()
				if k >= n {
					break
				}
				if k != last {
					last, lastChange = k, time.Now()
				}
				if time.Since(lastChange) > 20*time.Second {
					if k < n*99/100 {
						t.Fatalf("%d of %d sessions up, stuck for 20 s (%d handshake failures)", k, n, b.srv.Stats.HandshakeFailures.Load())
					}
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			up := time.Since(t0)
			k := sessions()
			// Idle sessions park after bridgeParkAfter (the product's
			// default is 60 s; the steady state is the same): wait until
			// every one is parked, or 30 s.
			parkDeadline := time.Now().Add(bridgeParkAfter + 30*time.Second)
			for {
				if _, parked := b.srv.Count(); parked >= k || time.Now().After(parkDeadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			_, parkedN := b.srv.Count()
			if k < n {
				rep.note("endpoints: %d: only %d sessions came up (bridge counted %d handshake failures); the session share is divided by %d", n, k, b.srv.Stats.HandshakeFailures.Load(), k)
			}
			time.Sleep(time.Second) // let handshake buffers go
			mem2, g2 := memStat()
			if o.HeapProfile != "" {
				if f, err := os.Create(fmt.Sprintf("%s.%d", o.HeapProfile, n)); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
			// Registered cost per registered endpoint, session cost per
			// session up.
			per := float64(int64(mem1)-int64(mem0))/float64(n) + float64(int64(mem2)-int64(mem1))/float64(k)
			row.Samples = []Sample{{Rate: per / 1024}}
			gper[row.Name] = float64(g2-g0) / float64(n)
			row.Median = row.Samples[0]
			rep.note("endpoints: %d: %.1f KB per endpoint = registry %.1f KB + proxy address/listener %.1f KB + idle DTLS session %.1f KB; %.2f goroutines per endpoint (%.2f proxy, %.2f session); %d sessions up in %v (%d client processes, 8 handshakes in flight each), %d parked (coap.Config.ParkAfter %v in the bench, 60 s by default)",
				n, per/1024, float64(int64(memReg)-int64(mem0))/float64(n)/1024, float64(int64(mem1)-int64(memReg))/float64(n)/1024,
				float64(int64(mem2)-int64(mem1))/float64(k)/1024, float64(g2-g0)/float64(n), float64(g1-g0)/float64(n), float64(g2-g1)/float64(k),
				n, up.Round(100*time.Millisecond), (n+perChild-1)/perChild, parkedN, bridgeParkAfter)
			stop()
		})
		if err != nil {
			row.Err = err.Error()
		} else if msg != "" {
			row.Err = "skipped: " + msg
		}
		rows = append(rows, row)
	}
	rep.add(title, "KB/endpoint", rows)
	g := rep.find(title)
	for _, r := range rows {
		if r.Err == "" {
			g.ratios = append(g.ratios, ratio{label: "25 KB goal / measured KB per idle endpoint at " + r.Name,
				value: 25 / r.Median.Rate, goal: 1, ok: r.Median.Rate <= 25})
			fmt.Printf("  %s: %.1f KB/endpoint (goal <= 25: %s)\n", r.Name, r.Median.Rate, okWord(r.Median.Rate <= 25))
			gp := gper[r.Name]
			g.ratios = append(g.ratios, ratio{label: "1 goroutine goal / measured goroutines per idle endpoint at " + r.Name,
				value: 1 / max(gp, 0.001), goal: 1, ok: gp <= 1})
			fmt.Printf("  %s: %.2f goroutines/endpoint (goal <= 1: %s)\n", r.Name, gp, okWord(gp <= 1))
		}
	}
	rep.note("endpoints: devices are pion/dtls v3 PSK CCM_8 clients in child processes (%d sockets each, own 127.1.x.1 source) over loopback UDP; the bridge side is one UDP socket, so no in-memory transport was needed", perChild)
}
