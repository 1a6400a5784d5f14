package coap_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/internal/procstat"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Issue 18's DTLS flood: 40,000 well-formed ClientHellos, each from its own
// spoofed source address, at 4,000/s. Before the stateless cookie the
// bridge grew from 19.5 MB to 1.35 GB (a conn and a pion server per hello,
// held for the 45 s handshake timeout).
const (
	floodHellos = 40000
	floodRate   = 4000     // per second
	floodRSSMax = 64 << 20 // bytes of RSS growth allowed
	floodChild  = "FG_COAP_FLOOD_CHILD"
)

// TestAttackClientHelloFlood runs the DTLS server in a child process (this
// test binary, TestAttackFloodServerChild) and measures the child's RSS
// (VmRSS in /proc) while this process floods it on loopback with
// ClientHellos from 40,000 distinct 127.x.y.z source addresses (IP_PKTINFO
// picks the source per datagram; all of 127/8 is local), and a real device
// completes its handshake and a GET in the middle of the flood.
func TestAttackClientHelloFlood(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackFloodServerChild$", "-test.v")
	cmd.Env = append(os.Environ(), floodChild+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	kv := func(prefix string) map[string]string {
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, prefix) {
				m := map[string]string{}
				for _, f := range strings.Fields(l)[1:] {
					k, v, _ := strings.Cut(f, "=")
					m[k] = v
				}
				return m
			}
		}
		t.Fatalf("child ended before %s", prefix)
		return nil
	}
	ready := kv("READY")
	addr := ready["addr"]
	key, err := hex.DecodeString(ready["key"])
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid

	// Warm up: one handshake, so the baseline includes pion and go-coap.
	d, err := coaptest.Dial(t, addr, coaptest.Options{Identity: "sensor-17", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d, "/warm"); code != codes.Content {
		t.Fatalf("warm-up GET: %v", code)
	}
	_ = d.Conn.Close()
	time.Sleep(200 * time.Millisecond)
	rss := procstat.WatchRSS(pid)
	base := rss.Base
	if base == 0 {
		t.Fatalf("no RSS for pid %d", pid)
	}

	raddr, _ := net.ResolveUDPAddr("udp", addr)
	sent := make(chan int, 1)
	half := make(chan struct{})
	go func() { sent <- coaptest.SpoofedHelloFlood(t, raddr, floodHellos, floodRate, half) }()

	// A legitimate device handshakes while the flood runs.
	<-half
	start := time.Now()
	d, err = coaptest.Dial(t, addr, coaptest.Options{Identity: "sensor-17", Key: key})
	if err != nil {
		t.Fatalf("legitimate handshake during the flood: %v", err)
	}
	if code, body := get(t, d, "/during"); code != codes.Content || body != "hello sensor-17" {
		t.Fatalf("GET during the flood: %v %q", code, body)
	}
	t.Logf("legitimate handshake + GET during the flood: %v", time.Since(start).Round(time.Millisecond))
	n := <-sent
	time.Sleep(500 * time.Millisecond)
	peak := rss.Stop()
	after, err := procstat.RSS(pid)
	if err != nil {
		t.Fatal(err)
	}

	_ = stdin.Close()
	st := kv("STATS")
	hvr, _ := strconv.Atoi(st["hello_verify"])
	pending, _ := strconv.Atoi(st["pending_max"])
	ok, _ := strconv.Atoi(st["handshakes_ok"])
	growth := peak - base
	t.Logf("flood: %d ClientHellos sent, %d HelloVerifyRequests answered; child RSS %.1f MB before, peak %.1f MB (+%.1f MB), %.1f MB after; pending handshakes max %d; handshakes ok %d",
		n, hvr, mb(base), mb(peak), mb(growth), mb(after), pending, ok)
	if n != floodHellos {
		t.Fatalf("sent %d ClientHellos, want %d", n, floodHellos)
	}
	// The flood must have reached the server (else the bound proves
	// nothing): loopback drops only when the socket buffer overflows.
	if hvr < floodHellos/2 { // a loaded machine may drop some in the socket buffer
		t.Fatalf("server answered %d of %d spoofed ClientHellos: the flood did not reach it", hvr, floodHellos)
	}
	if growth >= floodRSSMax*raceRSSFactor {
		t.Fatalf("RSS grew by %.1f MB during the flood, bound %d MB (x%d under -race)", mb(growth), floodRSSMax>>20, raceRSSFactor)
	}
	if pending > 1 {
		t.Fatalf("%d handshakes pending at once: spoofed hellos got past the cookie", pending)
	}
	if ok != 2 {
		t.Fatalf("handshakes ok = %d, want 2 (warm-up and the one during the flood)", ok)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// TestPendingHandshakeCaps: a peer that answers the cookie gets a pending
// handshake, bounded per source IP and in total, closed after
// PendingTimeout if it goes no further.
func TestPendingHandshakeCaps(t *testing.T) {
	f := newFixture(t, func(c *coap.Config) {
		c.MaxPendingPerSource, c.MaxPendingHandshakes, c.PendingTimeout = 2, 3, 3*time.Second
	})
	srv, _ := net.ResolveUDPAddr("udp", f.srv.Addr().String())
	// open proves the address of a new socket on ip and leaves its
	// handshake pending (the ServerHello flight is never answered).
	open := func(ip string) {
		t.Helper()
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		var r handshake.Random
		_ = r.Populate()
		if _, err := c.WriteTo(coaptest.ClientHello(t, r, nil, 0), srv); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no HelloVerifyRequest: %v", err)
		}
		var rl recordlayer.RecordLayer
		if err := rl.Unmarshal(buf[:n]); err != nil {
			t.Fatal(err)
		}
		hvr, ok := rl.Content.(*handshake.Handshake).Message.(*handshake.MessageHelloVerifyRequest)
		if !ok {
			t.Fatalf("got %T, want HelloVerifyRequest", rl.Content.(*handshake.Handshake).Message)
		}
		if _, err := c.WriteTo(coaptest.ClientHello(t, r, hvr.Cookie, 1), srv); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (pending %d)", what, f.srv.PendingHandshakes())
			}
		}
	}
	open("127.0.0.2")
	open("127.0.0.2")
	waitFor("2 pending", func() bool { return f.srv.PendingHandshakes() == 2 })
	open("127.0.0.2") // third from the same source
	waitFor("per-source refusal", func() bool { return f.srv.Stats.PendingRefusedSource.Load() == 1 })
	open("127.0.0.3")
	waitFor("3 pending", func() bool { return f.srv.PendingHandshakes() == 3 })
	open("127.0.0.4") // over the total
	waitFor("total refusal", func() bool { return f.srv.Stats.PendingRefused.Load() == 1 })
	if p := f.srv.PendingHandshakes(); p != 3 {
		t.Fatalf("pending %d, want 3", p)
	}
	waitFor("pending timeout", func() bool { return f.srv.PendingHandshakes() == 0 })
	if n := f.srv.Stats.PendingExpired.Load(); n != 3 {
		t.Fatalf("PendingExpired = %d, want 3", n)
	}
	// Room again: a real device completes.
	d, err := coaptest.Dial(t, f.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d, "/after"); code != codes.Content {
		t.Fatalf("GET after: %v", code)
	}
	if f.srv.PendingHandshakes() != 0 {
		t.Fatalf("authenticated session still counted pending")
	}
}

// TestAttackFloodServerChild is the server side of
// TestAttackClientHelloFlood, run only in its child process: it prints
// READY with the address and sensor-17's PSK, serves until stdin closes,
// then prints STATS.
func TestAttackFloodServerChild(t *testing.T) {
	if testenv.ChildProcess(t, floodChild, "TestAttackClientHelloFlood") != "1" {
		t.Fatalf("%s=%q, want 1", floodChild, os.Getenv(floodChild))
	}
	f := newFixture(t, nil)
	fmt.Printf("READY addr=%s key=%s\n", f.srv.Addr(), hex.EncodeToString(f.key))
	var pendingMax atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if p := int64(f.srv.PendingHandshakes()); p > pendingMax.Load() {
				pendingMax.Store(p)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until EOF
	fmt.Printf("STATS hello_verify=%d pending_max=%d handshakes_ok=%d garbage=%d backlog=%d\n",
		f.srv.Stats.HelloVerifySent.Load(), pendingMax.Load(), f.srv.Stats.HandshakesOK.Load(),
		f.srv.Stats.Garbage.Load(), f.srv.Stats.Backlog.Load())
}

// TestBlockTransfersBounded: one device opening many block-wise uploads
// (first Block1 blocks, each with its own token, never finished) gets at
// most MaxBlockTransfers into reassembly; the rest are refused and counted
// (CoAPErrors: go-coap's "receiving messages cache is full").
func TestBlockTransfersBounded(t *testing.T) {
	f := newFixture(t, func(c *coap.Config) { c.MaxBlockTransfers = 4; c.Rate = -1 })
	d, err := coaptest.Dial(t, f.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	const uploads = 12
	for i := 0; i < uploads; i++ {
		req, err := d.Conn.NewPostRequest(context.Background(), "/up", message.TextPlain, bytes.NewReader(bytes.Repeat([]byte{'b'}, 16)))
		if err != nil {
			t.Fatal(err)
		}
		req.SetMessageID(d.Conn.GetMessageID())
		req.SetType(message.NonConfirmable)
		tok, _ := message.GetToken()
		req.SetToken(tok)
		bv, _ := blockwise.EncodeBlockOption(blockwise.SZX16, 0, true)
		req.SetOptionUint32(message.Block1, bv)
		// Around the device's own block-wise layer: the first block only.
		if err := d.Conn.Session().WriteMessage(req); err != nil {
			t.Fatal(err)
		}
		d.Conn.ReleaseMessage(req)
	}
	for deadline := time.Now().Add(10 * time.Second); f.srv.Stats.CoAPErrors.Load() < uploads-4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(100 * time.Millisecond) // no more than the bound's complement must come
	if n := f.srv.Stats.CoAPErrors.Load(); n != uploads-4 {
		t.Fatalf("CoAPErrors = %d, want %d (uploads over the bound of 4)", n, uploads-4)
	}
}

// TestRebootSamePort: a device that reboots and handshakes again from the
// same address and port (tinydtls devices often use a fixed source port),
// without having closed its old session, gets a new session at once: its
// cookie ClientHello proves the address and replaces the old session.
func TestRebootSamePort(t *testing.T) {
	f := newFixture(t, nil)
	raddr, _ := net.ResolveUDPAddr("udp", f.srv.Addr().String())
	handshake := func(laddr *net.UDPAddr) (*net.UDPConn, error) {
		sock, err := net.ListenUDP("udp4", laddr)
		if err != nil {
			t.Fatal(err)
		}
		key := f.key
		dc, err := dtls.ClientWithOptions(sock, raddr, dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte("sensor-17")), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
			dtls.WithFlightInterval(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dc.HandshakeContext(ctx); err != nil {
			_ = sock.Close()
			return nil, err
		}
		return sock, nil // the DTLS conn is abandoned with the socket (a reboot)
	}
	first, err := handshake(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	laddr := first.LocalAddr().(*net.UDPAddr)
	waitSession := func(n uint64) {
		for deadline := time.Now().Add(5 * time.Second); f.srv.Stats.HandshakesOK.Load() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("HandshakesOK = %d, want %d", f.srv.Stats.HandshakesOK.Load(), n)
			}
		}
	}
	waitSession(1)
	_ = first.Close() // power cut: no close_notify
	second, err := handshake(laddr)
	if err != nil {
		t.Fatalf("handshake after a reboot on the same port: %v", err)
	}
	defer second.Close()
	waitSession(2)
}
