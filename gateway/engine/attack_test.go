package engine_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// flood sends mk(i) to "to" from conns in turn, every interval, until stop
// is closed; it returns how many it sent.
func flood(conns []net.PacketConn, to net.Addr, interval time.Duration, stop <-chan struct{}, mk func(i int) []byte) int {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return i
		case <-t.C:
		}
		_, _ = conns[i%len(conns)].WriteTo(mk(i), to)
	}
}

// TestJunkDoesNotChargeVictim (issue 18, finding 5): 28-byte datagrams that
// look like the start of a Main Mode, 50/s with the victim's source address,
// used to spend the victim's per-source pacing (1/s, burst 5) so that its
// real Main Mode was refused for as long as the junk ran. The bound held:
// while the junk runs the victim still gets in, admission refuses none of
// its messages (refused = 0), and every junk datagram is dropped and counted
// as malformed (set-up failure reason "malformed"), charged to nobody.
func TestJunkDoesNotChargeVictim(t *testing.T) {
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	c, err := net.ListenPacket("udp", "127.0.0.1:0") // the victim's address
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent int
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent = flood([]net.PacketConn{c}, net.UDPAddrFromAddrPort(g.eng.Tunnel().IKEAddr()), 20*time.Millisecond, stop, junkFirstMainMode)
	}()
	es := g.eng.Stats()
	// Let the junk spend more than the victim's burst first.
	waitFor(t, "junk dropped", func() bool { return es.AdmissionMalformed.Load() >= 10 })
	start := time.Now()
	dial(t, g.clientConfig("hall7", "pw7"))
	took := time.Since(start)
	close(stop)
	wg.Wait()
	waitFor(t, "all junk counted", func() bool { return es.AdmissionMalformed.Load() >= uint64(sent) })
	t.Logf("victim set up in %v during %d junk datagrams from its address; malformed %d, refused %d",
		took.Round(time.Millisecond), sent, es.AdmissionMalformed.Load(), es.AdmissionRefused.Load())
	if n := es.AdmissionRefused.Load(); n != 0 {
		t.Errorf("admission refused %d first messages, want 0: junk was charged to the victim", n)
	}
	if n := es.AdmissionMalformed.Load(); n != uint64(sent) {
		t.Errorf("%d junk datagrams counted as malformed, want %d", n, sent)
	}
	if m := grepLines(g.scrape(t), `phase="admission",reason="malformed"`); !strings.Contains(m, "malformed") {
		t.Errorf("no admission/malformed set-up failures in the metrics")
	}
}

// floodAt sends mk(i) to "to" at rate datagrams a second, round-robin over
// conns, until stop is closed; it returns how many it sent.
func floodAt(conns []net.PacketConn, to net.Addr, rate int, stop <-chan struct{}, mk func(i int) []byte) int {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	sent := 0
	for {
		select {
		case <-stop:
			return sent
		case <-t.C:
		}
		for due := int(time.Since(start).Seconds() * float64(rate)); sent < due; sent++ {
			_, _ = conns[sent%len(conns)].WriteTo(mk(sent), to)
		}
	}
}

// Spoofed Main Mode flood (issue 18, finding 1).
const (
	floodRate     = 1000            // well-formed first Main Mode messages a second
	floodSources  = 512             // distinct source addresses (127.1.0.0/16)
	floodHalfOpen = 1024            // the gateway's half-open table: full after ~1 s of flood
	floodSites    = 3               // real sites that set up during the flood
	phase1Bound   = 2 * time.Second // each must be up within this (the initiator's first retransmission)
)

// TestSpoofedMainModeFlood: 1,000 well-formed first Main Mode messages a
// second from 512 changing source addresses, answered by nobody, with the
// half-open table cut to 1,024 so that it is full and evicting throughout.
// Bounds held: each of three real sites that dials during the flood has
// its whole tunnel (phase 1, Quick Mode, L2TP, PPP) up within 2 s with no
// IKE retransmission; no spoofed source reached pacing (admitted = the
// three sites, refused 0); no real peer lost its half-open state; the
// table never held more than its bound (evictions counted instead).
// (Before issue 18: a 256-entry table that refused newcomers and global
// pacing charged per first message; a site waited for the flood to end.)
func TestSpoofedMainModeFlood(t *testing.T) {
	var ids strings.Builder
	for i := range floodSites {
		fmt.Fprintf(&ids, "  - {name: site%d, ppp: {password: pw}, policy: sensors}\n", i)
	}
	ids.WriteString(fmt.Sprintf("limits: {ike_half_open: %d}\n", floodHalfOpen)) // from gateway.yaml to the IKE engine
	g := startGateway(t, parseConfig(t, ids.String()), engine.Config{})
	var conns []net.PacketConn
	for i := range floodSources {
		c, err := net.ListenPacket("udp", netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}).String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	ist := g.eng.Tunnel().Stats().IKE
	es := g.eng.Stats()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent int
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent = floodAt(conns, net.UDPAddrFromAddrPort(g.eng.Tunnel().IKEAddr()), floodRate, stop, firstMainMode)
	}()
	var once sync.Once
	end := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer end()
	// The table is full and evicting before the first site dials.
	waitFor(t, "half-open table full", func() bool { return ist.HalfOpenEvicted.Load() > 0 })
	for i := range floodSites {
		time.Sleep(500 * time.Millisecond) // spread the sites over the flood; the table turns over meanwhile
		cc := g.clientConfig(fmt.Sprintf("site%d", i), "pw")
		cc.LocalIKE = fmt.Sprintf("127.0.0.%d:0", 10+i)
		cc.LocalNATT = cc.LocalIKE
		start := time.Now()
		tn, _ := dial(t, cc)
		took := time.Since(start)
		rtx := tn.Stats().IKE.Retransmits.Load()
		t.Logf("site%d up in %v (IKE retransmissions %d) during the flood; half-open evicted so far %d",
			i, took.Round(time.Millisecond), rtx, ist.HalfOpenEvicted.Load())
		if took > phase1Bound || rtx != 0 {
			t.Errorf("site%d: set-up took %v with %d IKE retransmissions, want < %v and none", i, took, rtx, phase1Bound)
		}
	}
	// The gauge shows the table full, never above its bound.
	expo := g.scrape(t)
	m := regexp.MustCompile(`fleetgate_ike_half_open\{state="waiting"\} (\d+)`).FindStringSubmatch(expo)
	if m == nil {
		t.Fatalf("no half-open gauge in the metrics:\n%s", grepLines(expo, "half_open"))
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 || n > floodHalfOpen {
		t.Errorf("fleetgate_ike_half_open{state=\"waiting\"} = %d during the flood, want 1..%d", n, floodHalfOpen)
	}
	end()
	t.Logf("flood: %d first messages from %d sources; IKE received %d, half-open evicted %d, lost %d; admission admitted %d, refused %d",
		sent, floodSources, ist.Received.Load(), ist.HalfOpenEvicted.Load(), ist.HalfOpenLost.Load(), es.AdmissionAdmitted.Load(), es.AdmissionRefused.Load())
	if n := es.AdmissionAdmitted.Load(); n != floodSites {
		t.Errorf("admission admitted %d Main Modes, want %d (the sites): spoofed sources reached pacing", n, floodSites)
	}
	if n := es.AdmissionRefused.Load(); n != 0 {
		t.Errorf("admission refused %d", n)
	}
	if n := ist.HalfOpenLost.Load(); n != 0 {
		t.Errorf("%d real peers lost their half-open state", n)
	}
	if n := ist.HalfOpenEvicted.Load(); n < uint64(sent-floodHalfOpen)/2 {
		t.Errorf("only %d evictions for %d first messages: did the flood reach the table?", n, sent)
	}
}

// TestIKEScanStatelessCookie: ike-scan, a stock third-party initiator,
// gets our Main Mode answer, and the responder cookie is a function of its
// address, port and cookie (RFC 2408 §2.5.3): the same probe gets the same
// cookie, another source port another one. ike-scan never sends MM3, so
// nothing reaches pacing and no Diffie-Hellman is done (admitted 0).
func TestIKEScanStatelessCookie(t *testing.T) {
	bin := testenv.RequireBinary(t, "ike-scan")
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	ikeAddr := g.eng.Tunnel().IKEAddr()
	// ike-scan binds its source port on the wildcard address, which any
	// socket on that port blocks (another test's on 127.0.0.30, say):
	// ask for a port free on every address, and start over on new ports
	// if one was taken meanwhile.
	freePort := func() int {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	re := regexp.MustCompile(`CKY-R=([0-9a-f]{16})`)
	errPortTaken := errors.New("source port taken")
	scan := func(sport int) (string, error) {
		t.Helper()
		out, err := exec.Command(bin, "--sport="+strconv.Itoa(sport), "--dport="+strconv.Itoa(int(ikeAddr.Port())),
			"--cookie=0123456789abcdef", "--trans=(1=7,14=128,2=4,3=1,4=14)", "--retry=3", "--timeout=2000", "127.0.0.1").CombinedOutput()
		if err != nil && strings.Contains(string(out), "Could not bind") {
			return "", errPortTaken
		}
		if err != nil {
			t.Fatalf("ike-scan: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "Main Mode Handshake returned") {
			t.Fatalf("ike-scan got no Main Mode answer:\n%s", out)
		}
		m := re.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("no responder cookie in ike-scan's output:\n%s", out)
		}
		return m[1], nil
	}
	var (
		p1, p2  int
		a, b, c string
	)
	for try := 0; ; try++ {
		p1, p2 = freePort(), freePort()
		var e1, e2, e3 error
		a, e1 = scan(p1)
		b, e2 = scan(p1)
		c, e3 = scan(p2)
		if err := errors.Join(e1, e2, e3); err == nil {
			break
		} else if try == 4 {
			t.Fatalf("ike-scan: %v five times", err)
		}
	}
	t.Logf("responder cookies: port %d: %s, again %s; port %d: %s", p1, a, b, p2, c)
	if a != b {
		t.Errorf("the same probe got cookies %s and %s: not stateless", a, b)
	}
	if a == c {
		t.Errorf("another source port got the same cookie %s", a)
	}
	if n := g.eng.Stats().AdmissionAdmitted.Load(); n != 0 {
		t.Errorf("pacing admitted %d Main Modes without a third message", n)
	}
}

// TestPacingAtThirdMessage: gateway pacing (per source: burst 1, then one
// per 100 s) is charged when a Main Mode's third message proves the
// address. The second site from one address is refused there, counted
// and reported as set-up failure admission/paced; its first messages
// were answered all the same.
func TestPacingAtThirdMessage(t *testing.T) {
	g := startGateway(t, parseConfig(t, "  - {name: pump2, ppp: {password: pw2}, policy: sensors}\n"+
		"pacing: {per_source_rate: 0.01, per_source_burst: 1, global_rate: 1000, global_burst: 1000}\n"), engine.Config{})
	first := g.clientConfig("hall7", "pw7")
	first.LocalIKE, first.LocalNATT = "127.0.0.30:0", "127.0.0.30:0"
	dial(t, first)
	second := g.clientConfig("pump2", "pw2")
	second.LocalIKE, second.LocalNATT = "127.0.0.30:0", "127.0.0.30:0"
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if tn, err := l2tpipsec.Dial(ctx, second); err == nil {
		tn.Close()
		t.Fatal("second site from the same address got in despite per-source pacing")
	} else if p := l2tpipsec.PhaseOf(err); p != l2tpipsec.PhaseIKE {
		t.Errorf("second site failed in phase %v (%v), want IKE", p, err)
	}
	es := g.eng.Stats()
	t.Logf("admission admitted %d, refused %d", es.AdmissionAdmitted.Load(), es.AdmissionRefused.Load())
	if es.AdmissionAdmitted.Load() != 1 || es.AdmissionRefused.Load() == 0 {
		t.Errorf("admitted %d refused %d, want 1 and > 0", es.AdmissionAdmitted.Load(), es.AdmissionRefused.Load())
	}
	if m := grepLines(g.scrape(t), `phase="admission",reason="paced"`); m == "" {
		t.Error("no admission/paced set-up failure in the metrics")
	}
}
