package ike

import (
	"bytes"
	"crypto/x509"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// slowWork makes every offloaded job wait until released, so a test can
// act while Diffie-Hellman work is "in progress".
type slowWork struct {
	started chan struct{}
	release chan struct{}
}

func newSlowWork(e *Engine) *slowWork {
	s := &slowWork{started: make(chan struct{}, 16), release: make(chan struct{})}
	e.testHookWork = func() {
		s.started <- struct{}{}
		<-s.release
	}
	return s
}

func (s *slowWork) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("offloaded job never started")
	}
}

// waitCount waits (event loop, generous deadline) for n datagrams sent.
func waitCount(t *testing.T, cs *captureSender, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for cs.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("sent %d datagrams, want %d", cs.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *captureSender) at(i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out[i]
}

// hasPayload tells the responder's second and fourth Main Mode messages
// apart (SA payload / KE payload).
func hasPayload(t *testing.T, b []byte, pt PayloadType) bool {
	t.Helper()
	m, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := m.Find(pt)
	return ok
}

// TestMM1AnsweredDuringSlowDH: while the responder's Diffie-Hellman for
// one peer's MM3 is in progress (held by a hook in the worker), a first
// message from another peer is answered at once (Input returns with MM2
// sent), a retransmitted MM3 is counted as a duplicate and not answered
// twice, and MM4 goes out once the DH is done. With the only worker busy
// and the queue (1) full, a third peer's MM3 is dropped and counted
// (CryptoQueueFull) without changing its SA: its retransmission is
// processed later. A job whose SA expired meanwhile is discarded
// (CryptoStale) and sends nothing.
func TestMM1AnsweredDuringSlowDH(t *testing.T) {
	clk := stacktest.NewClock()
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), CryptoWorkers: 1, MaxCryptoQueue: 1, HalfOpenTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	slow := newSlowWork(e)
	local := netip.MustParseAddrPort("192.0.2.1:500")
	a := netip.MustParseAddrPort("203.0.113.1:500")
	b := netip.MustParseAddrPort("203.0.113.2:500")
	c := netip.MustParseAddrPort("203.0.113.3:500")
	d := netip.MustParseAddrPort("203.0.113.4:500")

	// a, b, c: MM1 answered.
	var mm3 [3][]byte
	for i, src := range []netip.AddrPort{a, b, c} {
		e.Input(freshMM1(), local, src, false)
		if cs.count() != i+1 || !hasPayload(t, cs.at(i), PayloadSA) {
			t.Fatalf("MM1 from %v: %d datagrams sent, want MM2 #%d", src, cs.count(), i+1)
		}
		mm3[i] = mm3For(t, cs.at(i))
	}
	// a's MM3: its DH starts on the only worker and is held there.
	e.Input(mm3[0], local, a, false)
	slow.waitStarted(t)
	// b's MM3 waits in the queue (1), c's finds it full: dropped, counted.
	e.Input(mm3[1], local, b, false)
	e.Input(mm3[2], local, c, false)
	if got := e.Stats().CryptoQueueFull.Load(); got != 1 {
		t.Fatalf("CryptoQueueFull %d, want 1 (c's MM3)", got)
	}
	// The DH is in progress: a new first message is answered now.
	e.Input(freshMM1(), local, d, false)
	if cs.count() != 4 || !hasPayload(t, cs.at(3), PayloadSA) {
		t.Fatalf("MM1 during DH work: %d datagrams sent, want 4 (MM2 for d)", cs.count())
	}
	// a retransmits its MM3: a duplicate, not answered (MM4 is coming).
	dup := e.Stats().Duplicates.Load()
	e.Input(mm3[0], local, a, false)
	if e.Stats().Duplicates.Load() != dup+1 || cs.count() != 4 {
		t.Fatalf("MM3 retransmitted during its DH: duplicates +%d, sent %d; want +1, 4", e.Stats().Duplicates.Load()-dup, cs.count())
	}
	if w, n := e.HalfOpen(); w != 1 || n != 3 {
		t.Fatalf("half-open %d, negotiating %d; want 1 (d), 3 (a, b, c)", w, n)
	}

	// Release a's job: MM4 to a; then b's job runs (held again).
	slow.release <- struct{}{}
	waitCount(t, cs, 5)
	if !hasPayload(t, cs.at(4), PayloadKE) {
		t.Fatal("5th datagram is not MM4")
	}
	slow.waitStarted(t)
	// b's SA expires while its job is held: the result is discarded.
	clk.Advance(11 * time.Second)
	e.Tick() // expires b (and c, d: older than HalfOpenTTL)
	slow.release <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().CryptoStale.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("b's stale job never finished")
		}
		time.Sleep(time.Millisecond)
	}
	if cs.count() != 5 {
		t.Fatalf("a stale job sent something: %d datagrams, want 5", cs.count())
	}
	// c proves itself again with a fresh exchange; its MM3 is processed.
	e.Input(freshMM1(), local, c, false)
	waitCount(t, cs, 6)
	e.Input(mm3For(t, cs.at(5)), local, c, false)
	slow.waitStarted(t)
	close(slow.release)
	waitCount(t, cs, 7)
	if !hasPayload(t, cs.at(6), PayloadKE) {
		t.Fatal("c's MM4 missing")
	}
	if got := e.Stats().CryptoOffloaded.Load(); got != 3 {
		t.Fatalf("CryptoOffloaded %d, want 3 (a, b, c)", got)
	}
}

// TestCryptoQueueDropKeepsSA: an MM3 dropped because the queue is full
// leaves its SA in place, and the initiator's retransmission of that same
// MM3 is then processed (not taken for a duplicate).
func TestCryptoQueueDropKeepsSA(t *testing.T) {
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: stacktest.NewClock(), PSK: psk("k"), CryptoWorkers: 1, MaxCryptoQueue: 1})
	if err != nil {
		t.Fatal(err)
	}
	slow := newSlowWork(e)
	local := netip.MustParseAddrPort("192.0.2.1:500")
	srcs := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:500"), netip.MustParseAddrPort("203.0.113.2:500"), netip.MustParseAddrPort("203.0.113.3:500")}
	var mm3 [][]byte
	for i, src := range srcs {
		e.Input(freshMM1(), local, src, false)
		mm3 = append(mm3, mm3For(t, cs.at(i)))
	}
	e.Input(mm3[0], local, srcs[0], false)
	slow.waitStarted(t)
	e.Input(mm3[1], local, srcs[1], false)
	e.Input(mm3[2], local, srcs[2], false) // queue full: dropped
	if e.Stats().CryptoQueueFull.Load() != 1 {
		t.Fatalf("CryptoQueueFull %d, want 1", e.Stats().CryptoQueueFull.Load())
	}
	close(slow.release)
	waitCount(t, cs, 5) // MM4 for the first two
	dup := e.Stats().Duplicates.Load()
	e.Input(mm3[2], local, srcs[2], false) // the retransmission
	waitCount(t, cs, 6)
	if !hasPayload(t, cs.at(5), PayloadKE) || e.Stats().Duplicates.Load() != dup {
		t.Fatalf("retransmitted MM3 after a queue-full drop: not answered with MM4 (duplicates +%d)", e.Stats().Duplicates.Load()-dup)
	}
}

// BenchmarkMM1AfterMM3Burst: one reader (as the transport's socket loop)
// hands the engine a burst of 64 proven MM3s (MODP-2048) then a new
// peer's MM1; the metric mm1-wait-ms is how long that MM1 waited for its
// MM2: behind 64 Diffie-Hellman computations when they run inline under
// the engine's lock, behind 64 parses and queue pushes when offloaded.
//
//	go test -run '^$' -bench MM1AfterMM3Burst -benchtime 20x ./uplink/ike/
func BenchmarkMM1AfterMM3Burst(b *testing.B) {
	const burst = 64
	for _, tc := range []struct {
		name    string
		workers int
	}{{"inline", -1}, {"offload", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			var wait time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cs := &captureSender{}
				e, err := New(Config{Sender: cs, Clock: stacktest.NewClock(), PSK: psk("k"), CryptoWorkers: tc.workers, RatePerSource: 1000, BurstPerSource: 1000})
				if err != nil {
					b.Fatal(err)
				}
				local := netip.MustParseAddrPort("192.0.2.1:500")
				var mm3 [][]byte
				var srcs []netip.AddrPort
				for j := range burst {
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(j + 1)}), 500)
					e.Input(freshMM1(), local, src, false)
					m, err := ParseMessage(cs.at(j))
					if err != nil {
						b.Fatal(err)
					}
					h := m.Header
					mm3 = append(mm3, AppendMessage(nil, Header{ICookie: h.ICookie, RCookie: h.RCookie, Exchange: ExchangeIdentityProtection},
						[]Payload{{PayloadKE, bytes.Repeat([]byte{7}, 256)}, {PayloadNonce, bytes.Repeat([]byte{9}, 32)}}))
					srcs = append(srcs, src)
				}
				b.StartTimer()
				start := time.Now()
				for j := range burst {
					e.Input(mm3[j], local, srcs[j], false)
				}
				e.Input(freshMM1(), local, netip.MustParseAddrPort("203.0.113.200:500"), false)
				wait += time.Since(start)
				b.StopTimer()
				for deadline := time.Now().Add(time.Minute); cs.count() < 2*burst+1; {
					if time.Now().After(deadline) {
						b.Fatalf("%d of %d MM4 sent", cs.count()-burst-1, burst)
					}
					time.Sleep(time.Millisecond)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(wait.Microseconds())/1000/float64(b.N), "mm1-wait-ms")
		})
	}
}

// TestSlowCheckCertDoesNotBlockEngine: a gateway whose certificate check
// hangs (an OCSP responder timing out) at one site's MM5 still answers a
// new peer's MM1 and runs its timers meanwhile (CheckCert used to run
// under the engine's lock: both would have waited), does not retransmit
// MM4 to the site while working on its MM5, and completes the site's
// handshake once the check returns.
func TestSlowCheckCertDoesNotBlockEngine(t *testing.T) {
	ca := newTestCA(t, "fleetgate test CA")
	site := ca.issue(t, "site-17.fleet.example", false)
	gw := ca.issue(t, "gw.fleet.example", false)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	released := false
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) { c.PSK = nil; c.Cert = site; c.CAs = ca.pool },
		cfgB: func(c *Config) {
			c.Cert, c.CAs = gw, ca.pool // PSK kept too: the extra MM1 below offers PSK
			c.CheckCert = func(*x509.Certificate, []*x509.Certificate) error {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
				return nil
			}
		},
	})
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	p.dial(t)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("CheckCert never called")
	}
	rtx := p.b.eng.Stats().Retransmits.Load()
	done := make(chan struct{})
	go func() {
		p.b.eng.Input(freshMM1(), netip.AddrPortFrom(addrB, 500), netip.MustParseAddrPort("198.51.100.99:500"), false)
		p.clock.Advance(5 * time.Second) // past two retransmission intervals
		p.b.eng.Tick()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("MM1 and Tick blocked behind a certificate check in progress")
	}
	if w, _ := p.b.eng.HalfOpen(); w != 1 {
		t.Errorf("half-open after the new MM1: %d, want 1 (answered)", w)
	}
	if n := p.b.eng.Stats().Retransmits.Load() - rtx; n != 0 {
		t.Errorf("gateway retransmitted %d times while working on the site's MM5, want 0", n)
	}
	released = true
	close(release)
	p.wait(t, p.b, EventChildUp, 0)
	p.wait(t, p.a, EventChildUp, 0)
}
