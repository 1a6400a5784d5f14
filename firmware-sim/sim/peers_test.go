package sim

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file starts real Debian peers (libcoap's coap-server-openssl,
// mosquitto) with private configs on free loopback ports and stops them by
// PID. internal/realpeer had not landed when this was written.

// freeUDPPair returns a port p such that UDP p and p+1 are free on
// loopback (coap-server listens for DTLS on -p + 1).
func freeUDPPair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		a.Close()
		if err == nil {
			b.Close()
			return p
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuf is a goroutine-safe output buffer for a peer process.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPeer runs bin with args and stops it by PID at cleanup; its output
// is logged if the test failed.
func startPeer(t *testing.T, bin string, args ...string) *syncBuf {
	t.Helper()
	out := &syncBuf{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
	return out
}

// waitTCP waits until something accepts on addr.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never accepted: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, dir, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func mosquittoConf(port int, dir, cafile, certfile, keyfile, pwfile string) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		// Keep root so that mosquitto can read the test's private files.
		b.WriteString("user root\n")
	}
	fmt.Fprintf(&b, "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	fmt.Fprintf(&b, "pid_file %s\n", filepath.Join(dir, "mosquitto.pid"))
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", port)
	fmt.Fprintf(&b, "cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate false\n", cafile, certfile, keyfile)
	fmt.Fprintf(&b, "allow_anonymous false\npassword_file %s\n", pwfile)
	return b.String()
}
