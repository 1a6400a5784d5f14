// Package l2tptest holds helpers for the L2TP and PPP interop tests with
// real peers: a throwaway network namespace, a UDP socket opened inside it,
// a process runner that stops by PID, and a tshark capture whose packets
// are checked for anything Wireshark's dissectors flag as malformed.
//
// Every helper expects the caller to have called testenv.RequireRoot (and
// RequireBinary for the programs it runs) first. Namespaces are named
// "fg..." so CI's leftover check sees any that escape cleanup.
package l2tptest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns creates a network namespace with loopback up and deletes it when
// the test ends. It returns the namespace name.
func Netns(t testing.TB, tag string) string {
	t.Helper()
	name := fmt.Sprintf("fg%s%d", tag, os.Getpid()%100000)
	exec.Command("ip", "netns", "del", name).Run() // a leftover from a crashed run
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return name
}

// ListenUDP opens a UDP socket on addr inside namespace ns. The socket
// keeps its namespace after the helper's thread is gone.
func ListenUDP(t testing.TB, ns, addr string) *net.UDPConn {
	t.Helper()
	type result struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is left locked: Go then retires it with its
		// namespace when the goroutine ends, so no other goroutine runs
		// in ns by accident.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		ua, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			ch <- result{err: err}
			return
		}
		c, err := net.ListenUDP("udp4", ua)
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, r.err)
	}
	return r.c
}

// Proc is a running program whose combined output is collected.
type Proc struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// Write collects output (Proc is the command's stdout and stderr).
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the program printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitOutput polls the output until it contains s or timeout passes.
func (p *Proc) WaitOutput(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), s) {
			return true
		}
		select {
		case <-p.done:
			return strings.Contains(p.Output(), s)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// Stop sends sig to the process group Start created (by its ID) and waits
// up to 5 s for the leader to exit, then kills the group.
func (p *Proc) Stop(sig syscall.Signal) {
	if p.Cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.Cmd.Process.Pid // the group we created in Start
	syscall.Kill(-pgid, sig)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that outlived the leader get the same signal.
	syscall.Kill(-pgid, sig)
}

// Start runs argv inside namespace ns (empty: this namespace) and stops it
// with SIGTERM when the test ends.
func Start(t testing.TB, ns string, argv ...string) *Proc {
	t.Helper()
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	p := &Proc{Cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	// Own process group, so Stop reaches daemons' helper children too
	// (SoftEther runs a watchdog parent and a worker child); WaitDelay
	// keeps Wait from hanging on a pipe a stray child still holds.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.Cmd.WaitDelay = 2 * time.Second
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() { p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
	return p
}

// Capture runs tshark on iface in ns writing to a pcap in dir; stop ends
// it and returns the file.
func Capture(t testing.TB, ns, iface, dir, filter string) (stop func() string) {
	t.Helper()
	path := filepath.Join(dir, "capture.pcap")
	// The probes below go to the discard port and must pass the filter.
	p := Start(t, ns, "tshark", "-q", "-i", iface, "-w", path, "-f", "("+filter+") or udp port 9")
	if !p.WaitOutput("Capturing on", 10*time.Second) {
		t.Fatalf("tshark did not start: %s", p.Output())
	}
	// "Capturing on" can precede the capture proper: probe with datagrams
	// to the discard port until one shows up in the file.
	probe := ListenUDP(t, ns, "127.0.0.1:0")
	t.Cleanup(func() { probe.Close() })
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	start := size()
	deadline := time.Now().Add(10 * time.Second)
	for size() <= start || start == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tshark captures nothing: %s", p.Output())
		}
		probe.WriteTo([]byte("probe"), dst)
		time.Sleep(100 * time.Millisecond) // pacing of the probes, not synchronisation
		if start == 0 {
			start = size()
		}
	}
	return func() string {
		// dumpcap hands packets over in blocks; probe until the file
		// has grown twice more so everything before is on disk.
		grown, last := 0, size()
		deadline := time.Now().Add(5 * time.Second)
		for grown < 2 && time.Now().Before(deadline) {
			probe.WriteTo([]byte("probe"), dst)
			time.Sleep(100 * time.Millisecond) // pacing of the probes
			if s := size(); s > last {
				grown, last = grown+1, s
			}
		}
		p.Stop(syscall.SIGINT)
		return path
	}
}

// Dissect returns tshark's one-line summaries of the packets in pcap
// matching the display filter.
func Dissect(t testing.TB, pcap, filter string, extra ...string) []string {
	t.Helper()
	args := append([]string{"-r", pcap, "-Y", filter}, extra...)
	cmd := exec.Command("tshark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r: %v: %s", err, stderr.Bytes())
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// NoMalformed fails the test if Wireshark flags any packet in pcap that
// matches scope (a display filter; empty: every packet) as malformed, and
// returns how many packets matched wantFilter (for the caller to check
// that the capture saw the traffic at all).
func NoMalformed(t testing.TB, pcap, scope, wantFilter string) int {
	t.Helper()
	bad := "_ws.malformed || _ws.expert.severity >= error"
	if scope != "" {
		bad = "(" + scope + ") && (" + bad + ")"
	}
	if bad := Dissect(t, pcap, bad); len(bad) > 0 {
		t.Errorf("tshark flags %d packet(s) as malformed or erroneous:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	return len(Dissect(t, pcap, wantFilter))
}
