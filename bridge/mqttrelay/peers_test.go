package mqttrelay

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// mosquittoPeer is a real mosquitto broker on a private config and a free
// loopback port, standing in for the central broker. Stopped by PID.
type mosquittoPeer struct {
	addr    string
	logFile string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startMosquitto(t testing.TB) *mosquittoPeer { return startMosquittoTLS(t, nil) }

// startMosquittoTLS starts mosquitto with a TLS listener (server cert from
// pki) when pki is not nil.
func startMosquittoTLS(t testing.TB, pki *testPKI) *mosquittoPeer {
	t.Helper()
	bin := testenv.RequireBinary(t, "mosquitto")
	dir := t.TempDir()
	port := freePort(t)
	p := &mosquittoPeer{addr: fmt.Sprintf("127.0.0.1:%d", port), logFile: filepath.Join(dir, "mosquitto.log"), exited: make(chan struct{})}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root\n" // else mosquitto drops to "mosquitto" and cannot write the private log
	}
	conf := user + fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
log_dest file %s
log_type all
connection_messages true
max_inflight_messages 0
max_queued_messages 100000
`, port, p.logFile)
	if pki != nil {
		cert, key := pki.issue(t, "central", true)
		conf += fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n", pki.caFile, cert, key)
	}
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-c", cf)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s", p.addr)
		}
		time.Sleep(20 * time.Millisecond) // waiting for an external process
	}
	return p
}

// log returns mosquitto's log so far.
func (p *mosquittoPeer) log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// connectLines returns mosquitto's "New client connected from A:P as ID"
// lines, as "ID from A".
func (p *mosquittoPeer) connectLines(t testing.TB) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.log(t)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for i := 0; i+5 < len(f); i++ {
			if f[i] == "New" && f[i+1] == "client" && f[i+2] == "connected" && f[i+3] == "from" {
				host, _, _ := net.SplitHostPort(f[i+4])
				if f[i+5] == "as" && i+6 < len(f) {
					out = append(out, f[i+6]+" from "+host)
				}
			}
		}
	}
	return out
}

// gate is a TCP proxy in front of the central broker that the test can
// cut (all connections reset, new ones refused) to simulate a WAN outage
// without root.
type gate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	open   bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, open: true, conns: make(map[net.Conn]bool)}
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		g.setOpen(false)
		g.wg.Wait()
	})
	return g
}

func (g *gate) addr() string { return g.ln.Addr().String() }

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		if !g.open {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", g.target)
		if err != nil {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		g.conns[c], g.conns[up] = true, true
		g.mu.Unlock()
		g.wg.Add(2)
		go g.pipe(c, up)
		go g.pipe(up, c)
	}
}

func (g *gate) pipe(dst, src net.Conn) {
	defer g.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// setOpen opens or cuts the gate; cutting closes every proxied connection.
func (g *gate) setOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
	if !open {
		for c := range g.conns {
			_ = c.Close()
		}
		g.conns = make(map[net.Conn]bool)
	}
}
