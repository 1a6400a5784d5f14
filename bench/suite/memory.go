package suite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// benchMemory is measurement 3: heap per idle session on our gateway.
// The clients run in a child process (this command with -helper-clients)
// on loopback UDP sockets, so the figure is the gateway side alone.
func benchMemory(o *Options, rep *Report) {
	const title = "Gateway memory per idle session (heap + stacks; loopback UDP, clients in a child process)"
	var rows []Row
	for _, n := range o.Sessions {
		row := Row{Name: fmt.Sprintf("%d sessions", n)}
		_, msg, err := runScoped("memory", func(t testing.TB) {
			g := startOurGateway(t, nil, n)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			g0 := runtime.NumGoroutine()
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			ts := g.eng.Tunnel()
			cmd := exec.Command(exe, "-helper-clients", strconv.Itoa(n), "-helper-ike", ts.IKEAddr().String(),
				"-helper-natt", strconv.Itoa(int(ts.NATTAddr().Port())))
			t0 := time.Now()
			stdin, _ := launch(t, cmd, false)
			// A child still dialling does not read stdin yet: killed after 5 s.
			stopOnCleanup(t, cmd, stdin, 5*time.Second)
			deadline := time.Now().Add(5 * time.Minute)
			for g.srv.Env().Sessions.Len() < n {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d sessions registered", g.srv.Env().Sessions.Len(), n)
				}
				time.Sleep(100 * time.Millisecond)
			}
			up := time.Since(t0)
			runtime.GC()
			runtime.ReadMemStats(&after)
			// Heap plus goroutine stacks (HeapInuse alone misses the
			// stacks of the per-session goroutines).
			per := float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n)
			rep.note("memory: %d sessions: heap %.1f KB + stacks %.1f KB per session", n,
				float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(n)/1024,
				float64(int64(after.StackInuse)-int64(before.StackInuse))/float64(n)/1024)
			row.Samples = []Sample{{Rate: per / 1024}}
			row.Median = row.Samples[0]
			rep.note("memory: %d sessions up in %v (4 set-ups in flight), %.1f goroutines per session, HeapSys growth %.1f KB/session",
				n, up.Round(time.Second), float64(runtime.NumGoroutine()-g0)/float64(n),
				float64(int64(after.HeapSys)-int64(before.HeapSys))/float64(n)/1024)
		})
		if err != nil {
			row.Err = err.Error()
		} else if msg != "" {
			row.Err = "skipped: " + msg
		}
		rows = append(rows, row)
	}
	rep.add(title, "KB/session", rows)
	g := rep.find(title)
	for _, r := range rows {
		if r.Err == "" {
			// Goal: at most 64 KB per session; the ratio is goal/measured
			// (>= 1 means met).
			g.ratios = append(g.ratios, ratio{label: "64 KB goal / measured KB per session at " + r.Name,
				value: 64 / r.Median.Rate, goal: 1, ok: r.Median.Rate <= 64})
			fmt.Printf("  %s: %.1f KB/session (goal <= 64: %s)\n", r.Name, r.Median.Rate, okWord(r.Median.Rate <= 64))
		}
	}
}

// helperClients is the child side of benchMemory: it dials n idle
// sessions (4 in flight), then waits for stdin to close.
func helperClients(n int, ikeAddr string, natt int) int {
	// Two sockets per session: 10k sessions need more descriptors than
	// the usual hard limit; root may raise it (best effort).
	want := uint64(2*n + 256)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < want {
		rl.Cur = want
		if rl.Max < want {
			rl.Max = want
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			logf("helper: cannot raise the descriptor limit to %d: %v", want, err)
		}
	}
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
				Gateway: ikeAddr, NATTPort: uint16(natt),
				LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0", PSK: []byte(benchPSK),
				LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: fmt.Appendf(nil, "s%d.sites.example", i)},
				Username: fmt.Sprintf("s%d", i), Password: "pw",
				IKEOptions: l2tpipsec.IKEOptions{IKEProposals: "aes128-sha1-modp2048", ESPProposals: "aes128gcm16", DPDInterval: -1, KeepaliveInterval: -1},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := l2tpipsec.Dial(ctx, cc); err != nil {
				if failed.Add(1) <= 5 {
					logf("helper client %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		logf("helper: %d of %d set-ups failed", f, n)
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	return 0
}
