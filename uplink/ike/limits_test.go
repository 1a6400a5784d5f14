package ike

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// captureSender records what an engine sends.
type captureSender struct {
	mu  sync.Mutex
	out [][]byte
}

func (c *captureSender) SendIKE(b []byte, _, _ netip.AddrPort, _ bool) error {
	c.mu.Lock()
	c.out = append(c.out, b)
	c.mu.Unlock()
	return nil
}

func (c *captureSender) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

func freshMM1() []byte {
	b := mm1()
	_, _ = rand.Read(b[:8])
	return b
}

// mm3For answers the responder's MM2 reply with a third message carrying
// its cookie (KE and nonce of the right shape; the DH value is junk).
func mm3For(t *testing.T, mm2 []byte) []byte {
	t.Helper()
	m, err := ParseMessage(mm2)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	return AppendMessage(nil, Header{ICookie: h.ICookie, RCookie: h.RCookie, Exchange: ExchangeIdentityProtection},
		[]Payload{{PayloadKE, bytes.Repeat([]byte{7}, 256)}, {PayloadNonce, bytes.Repeat([]byte{9}, 32)}})
}

// TestHalfOpenEvictsOldest: a full half-open table evicts its oldest entry
// for a new first message instead of refusing the newcomer, every first
// message gets its reply, and entries expire after HalfOpenTTL.
func TestHalfOpenEvictsOldest(t *testing.T) {
	clk := stacktest.NewClock()
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), CryptoWorkers: -1, MaxHalfOpen: 5, HalfOpenTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	for i := 0; i < 10; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}), 500)
		e.Input(freshMM1(), local, src, false)
	}
	if got := e.SACount(); got != 5 {
		t.Errorf("half-open SAs: got %d, want 5", got)
	}
	if got := e.Stats().HalfOpenEvicted.Load(); got != 5 {
		t.Errorf("HalfOpenEvicted: got %d, want 5", got)
	}
	if got := cs.count(); got != 10 {
		t.Errorf("replies: got %d, want 10 (nobody refused)", got)
	}
	// The oldest (first five) were evicted: an MM3 for the first finds its
	// cookie valid but no state; one for the newest is taken.
	e.Input(mm3For(t, cs.out[0]), local, netip.MustParseAddrPort("203.0.113.1:500"), false)
	if got := e.Stats().HalfOpenLost.Load(); got != 1 {
		t.Errorf("HalfOpenLost: got %d, want 1", got)
	}
	clk.Advance(11 * time.Second)
	e.Tick()
	if got := e.SACount(); got != 0 {
		t.Errorf("after the half-open timeout: %d SAs, want 0", got)
	}
	if got := e.Stats().HalfOpenExpired.Load(); got != 5 {
		t.Errorf("HalfOpenExpired: got %d, want 5", got)
	}
}

// TestStatelessCookie: the responder cookie is a function of the
// initiator's address, port and cookie (RFC 2408 §2.5.3), a retransmitted
// MM1 gets the same reply, and an MM3 with a cookie we did not give is
// unmatched.
func TestStatelessCookie(t *testing.T) {
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: stacktest.NewClock(), PSK: psk("k"), CryptoWorkers: -1})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	mm1b := freshMM1()
	e.Input(mm1b, local, netip.MustParseAddrPort("203.0.113.1:500"), false)
	e.Input(mm1b, local, netip.MustParseAddrPort("203.0.113.1:500"), false)
	e.Input(mm1b, local, netip.MustParseAddrPort("203.0.113.1:501"), false)
	e.Input(mm1b, local, netip.MustParseAddrPort("203.0.113.2:500"), false)
	if cs.count() != 4 {
		t.Fatalf("%d replies, want 4", cs.count())
	}
	rc := func(i int) string { return fmt.Sprintf("%x", cs.out[i][8:16]) }
	if !bytes.Equal(cs.out[0], cs.out[1]) {
		t.Errorf("retransmitted MM1 got a different reply")
	}
	if rc(0) == rc(2) || rc(0) == rc(3) || rc(2) == rc(3) {
		t.Errorf("responder cookies for different ports/addresses collide: %s %s %s", rc(0), rc(2), rc(3))
	}
	if got := e.Stats().Duplicates.Load(); got != 1 {
		t.Errorf("Duplicates: got %d, want 1", got)
	}
	forged := mm3For(t, cs.out[0])
	forged[15] ^= 1
	e.Input(forged, local, netip.MustParseAddrPort("203.0.113.1:500"), false)
	if got := e.Stats().Unmatched.Load(); got != 1 {
		t.Errorf("Unmatched after a forged cookie: got %d, want 1", got)
	}
	if w, n := e.HalfOpen(); w != 3 || n != 0 {
		t.Errorf("HalfOpen() = %d waiting, %d negotiating; want 3, 0", w, n)
	}
}

// TestAdmissionAtMM3: the per-source bucket and Config.Admit are charged
// when MM3 proves the address, never by first messages: ten MM1 from one
// source all get replies, then its MM3s are paced (burst 4), and spoofed
// MM1s never reach Admit.
func TestAdmissionAtMM3(t *testing.T) {
	clk := stacktest.NewClock()
	cs := &captureSender{}
	var asked []netip.Addr
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), CryptoWorkers: -1, RatePerSource: 1, BurstPerSource: 4,
		Admit: func(a netip.Addr) bool { asked = append(asked, a); return true }})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	src := netip.MustParseAddrPort("203.0.113.9:500")
	for i := 0; i < 10; i++ {
		e.Input(freshMM1(), local, src, false)
	}
	for i := 0; i < 1000; i++ {
		e.Input(freshMM1(), local, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 500), false)
	}
	if got := cs.count(); got != 1010 {
		t.Fatalf("replies: got %d, want 1010", got)
	}
	if len(asked) != 0 || e.Stats().RateLimited.Load() != 0 {
		t.Fatalf("first messages charged: Admit asked %d times, RateLimited %d", len(asked), e.Stats().RateLimited.Load())
	}
	replies := append([][]byte{}, cs.out[:10]...)
	for _, r := range replies {
		e.Input(mm3For(t, r), local, src, false)
	}
	if got := e.Stats().RateLimited.Load(); got != 6 {
		t.Errorf("RateLimited: got %d, want 6", got)
	}
	if len(asked) != 4 || asked[0] != src.Addr() {
		t.Errorf("Admit asked %v, want 4 times for %v", asked, src.Addr())
	}
	// A refused MM3 keeps its half-open state: retransmitted later, it is admitted.
	clk.Advance(2 * time.Second)
	e.Input(mm3For(t, replies[9]), local, src, false)
	if len(asked) != 5 {
		t.Errorf("retransmitted MM3 after the refill: Admit asked %d times, want 5", len(asked))
	}
}

// TestFloodDoesNotStarveRealPeer: a real initiator's Main Mode completes
// while spoofed first messages, a quarter of the half-open table, arrive
// between each of its messages (its round trip, MM2 out to MM3 in, sees
// half a table: it answers within table/flood rate) and several tables'
// worth (over two) in all. Bound held: phase 1 established, the flood
// cost no DH (Admit never asked for a spoofed source) and the table never
// exceeded MaxHalfOpen.
func TestFloodDoesNotStarveRealPeer(t *testing.T) {
	clk := stacktest.NewClock()
	var q []queued
	var ea, eb *Engine
	initiator := netip.MustParseAddrPort("10.0.0.2:500")
	gw := netip.MustParseAddrPort("192.0.2.1:500")
	var up []Event
	var admitted []netip.Addr
	const table = 1000
	ea, err := New(Config{Sender: queueSender{q: &q, peer: &eb}, Clock: clk, PSK: psk("flood"), CryptoWorkers: -1})
	if err != nil {
		t.Fatal(err)
	}
	eb, err = New(Config{Sender: dropOthers{queueSender{q: &q, peer: &ea}, initiator}, Clock: clk, PSK: psk("flood"), MaxHalfOpen: table, CryptoWorkers: -1,
		Admit:   func(a netip.Addr) bool { admitted = append(admitted, a); return true },
		OnEvent: func(ev Event) { up = append(up, ev) }})
	if err != nil {
		t.Fatal(err)
	}
	spoof := 0
	flood := func() {
		for range table / 4 {
			spoof++
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(spoof >> 8), byte(spoof)}), 500)
			eb.Input(freshMM1(), gw, src, false)
		}
		if w, _ := eb.HalfOpen(); w > table {
			t.Fatalf("half-open table holds %d, bound %d", w, table)
		}
	}
	if err := ea.Dial(initiator, gw); err != nil {
		t.Fatal(err)
	}
	for n := 0; len(q) > 0 && n < 100; n++ {
		flood()
		m := q[0]
		q = q[1:]
		m.to.Input(m.b, m.local, m.remote, m.natt)
	}
	if len(up) == 0 || up[0].Kind != EventIKEUp {
		t.Fatalf("responder events %v, want ike-up first; eb stats unmatched %d malformed %d lost %d ratelimited %d p1failed %d auth %d; ea p1failed %d", kinds(up), eb.Stats().Unmatched.Load(), eb.Stats().Malformed.Load(), eb.Stats().HalfOpenLost.Load(), eb.Stats().RateLimited.Load(), eb.Stats().Phase1Failed.Load(), eb.Stats().AuthFailures.Load(), ea.Stats().Phase1Failed.Load())
	}
	if spoof < 2*table {
		t.Fatalf("only %d spoofed first messages", spoof)
	}
	for _, a := range admitted {
		if a != initiator.Addr() {
			t.Fatalf("Admit asked for spoofed source %v", a)
		}
	}
	t.Logf("%d spoofed first messages, evicted %d; real peer up; Admit asked %d times", spoof, eb.Stats().HalfOpenEvicted.Load(), len(admitted))
}

// dropOthers passes only what is sent to keep; the rest (replies to
// spoofed sources) vanish.
type dropOthers struct {
	queueSender
	keep netip.AddrPort
}

func (d dropOthers) SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	if remote.Addr() != d.keep.Addr() {
		return nil
	}
	return d.queueSender.SendIKE(b, local, remote, natt)
}

func TestMalformedInputCounted(t *testing.T) {
	e, err := New(Config{Sender: &captureSender{}, Clock: stacktest.NewClock(), PSK: psk("k")})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	src := netip.MustParseAddrPort("203.0.113.9:500")
	e.Input([]byte{1, 2, 3}, local, src, false)
	bad := freshMM1()
	bad[31] = 0xff // SA payload length beyond the message
	e.Input(bad, local, src, false)
	orphan := freshMM1()
	copy(orphan[8:16], []byte{1, 1, 1, 1, 1, 1, 1, 1}) // unknown responder cookie
	e.Input(orphan, local, src, false)
	if got := e.Stats().Malformed.Load(); got != 2 {
		t.Errorf("Malformed: got %d, want 2", got)
	}
	if got := e.Stats().Unmatched.Load(); got != 1 {
		t.Errorf("Unmatched: got %d, want 1", got)
	}
	if got := e.SACount(); got != 0 {
		t.Errorf("SAs: got %d, want 0", got)
	}
}

// TestPeerStartsQuickModeWholeSpace: after phase 1 SoftEther starts a Quick
// Mode itself with 0.0.0.0/0 selectors; our initiator must answer it.
func TestPeerStartsQuickModeWholeSpace(t *testing.T) {
	p := newPair(t, pairOpts{})
	p.dial(t)
	p.wait(t, p.a, EventChildUp, 0)
	p.wait(t, p.b, EventChildUp, 0)
	any4 := Identification{Type: IDIPv4AddrSubnet, Data: make([]byte, 8)}
	p.b.eng.mu.Lock()
	for _, sa := range p.b.eng.sas {
		if err := sa.startQuickModeWith(nil, any4, any4); err != nil {
			t.Fatal(err)
		}
	}
	p.b.eng.unlockAndFlush()
	ca := p.wait(t, p.a, EventChildUp, 0).Child
	cb := p.wait(t, p.b, EventChildUp, 0).Child
	checkPair(t, cb, ca)
	whole := netip.MustParsePrefix("0.0.0.0/0")
	if ca.Selectors.Local != whole || ca.Selectors.Remote != whole || ca.Role != RoleResponder {
		t.Errorf("selectors %+v, role %v", ca.Selectors, ca.Role)
	}
}

func FuzzEngineInput(f *testing.F) {
	f.Add(mm1(), false)
	f.Add(bytes.Repeat([]byte{0}, 40), true)
	f.Fuzz(func(t *testing.T, b []byte, natt bool) {
		e, err := New(Config{Sender: &captureSender{}, Clock: stacktest.NewClock(), PSK: psk("k")})
		if err != nil {
			t.Fatal(err)
		}
		local := netip.MustParseAddrPort("192.0.2.1:500")
		src := netip.MustParseAddrPort("203.0.113.9:500")
		e.Input(b, local, src, natt)
		// A second copy exercises the duplicate path.
		e.Input(b, local, src, natt)
		e.Tick()
	})
}

func TestRekeyChildOnDemandKeepsSelectors(t *testing.T) {
	p := newPair(t, pairOpts{})
	p.dial(t)
	p.wait(t, p.a, EventChildUp, 0)
	p.wait(t, p.b, EventChildUp, 0)
	any4 := Identification{Type: IDIPv4AddrSubnet, Data: make([]byte, 8)}
	p.a.eng.mu.Lock()
	for _, sa := range p.a.eng.sas {
		if err := sa.startQuickModeWith(nil, any4, any4); err != nil {
			t.Fatal(err)
		}
	}
	p.a.eng.unlockAndFlush()
	whole := p.wait(t, p.a, EventChildUp, 0).Child
	p.wait(t, p.b, EventChildUp, 0)
	if !p.a.eng.RekeyChild(whole.InSPI) {
		t.Fatal("RekeyChild did not find the child")
	}
	ev := p.wait(t, p.a, EventChildRekeyed, 0)
	if ev.Old != whole || ev.Child.Selectors != whole.Selectors {
		t.Errorf("rekeyed selectors %+v, want %+v", ev.Child.Selectors, whole.Selectors)
	}
	if p.a.eng.RekeyChild(12345) {
		t.Errorf("RekeyChild found an unknown SPI")
	}
}

func kinds(evs []Event) []EventKind {
	var out []EventKind
	for _, ev := range evs {
		out = append(out, ev.Kind)
	}
	return out
}

// TestChildInbound: the Quick Mode responder offers the inbound SA when it
// sends HASH(2), then reports the same SA up on HASH(3); the initiator
// offers its inbound SA when it sends HASH(3) (the responder may send on
// it once HASH(3) arrives), then reports it up; if HASH(3) never comes,
// the responder withdraws its offer.
func TestChildInbound(t *testing.T) {
	p := newSyncPair(t)
	want := []EventKind{EventIKEUp, EventChildInbound, EventChildUp}
	if got := kinds(p.evB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("responder events: got %v, want %v", got, want)
	}
	if got := kinds(p.evA); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("initiator events: got %v, want %v", got, want)
	}
	if p.evB[1].Child != p.evB[2].Child || p.evB[1].Child.InSPI != p.evA[2].Child.OutSPI {
		t.Errorf("responder: inbound offer and child-up differ")
	}
	if p.evA[1].Child != p.evA[2].Child || p.evA[1].Child.InSPI != p.evB[2].Child.OutSPI {
		t.Errorf("initiator: inbound offer and child-up differ")
	}
	// A second Quick Mode whose HASH(2) is lost for good.
	p.evB = nil
	p.ea.mu.Lock()
	for _, sa := range p.ea.sas {
		if err := sa.startQuickMode(nil); err != nil {
			t.Fatal(err)
		}
	}
	p.ea.unlockAndFlush()
	qm1 := p.q[0]
	p.q = nil
	qm1.to.Input(qm1.b, qm1.local, qm1.remote, qm1.natt)
	p.q = nil // HASH(2) lost
	for i := 0; i < 20 && len(p.evB) < 2; i++ {
		p.clk.Advance(10 * time.Second)
		p.eb.Tick()
		p.q = nil // and every retransmission of it
	}
	if got := kinds(p.evB); fmt.Sprint(got) != fmt.Sprint([]EventKind{EventChildInbound, EventChildDown}) {
		t.Fatalf("responder events: got %v, want [child-inbound child-down]", got)
	}
	if p.evB[0].Child != p.evB[1].Child {
		t.Errorf("withdrawn child is not the offered one")
	}
}

// TestSourceSALimit: a peer address holds at most MaxSAsPerSource
// responder SAs past MM3; the next proven Main Mode is dropped and
// counted, and a slot frees when one of them goes.
func TestSourceSALimit(t *testing.T) {
	clk := stacktest.NewClock()
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), CryptoWorkers: -1, MaxSAsPerSource: 2, HalfOpenTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	src := netip.MustParseAddrPort("203.0.113.9:500")
	proven := func() {
		e.Input(freshMM1(), local, src, false)
		e.Input(mm3For(t, cs.out[len(cs.out)-1]), local, src, false)
	}
	for range 3 {
		proven()
	}
	if got := e.Stats().SourceSALimited.Load(); got != 1 {
		t.Fatalf("SourceSALimited: got %d, want 1", got)
	}
	if _, n := e.HalfOpen(); n != 2 {
		t.Fatalf("negotiating: got %d, want 2", n)
	}
	clk.Advance(11 * time.Second)
	e.Tick()
	proven()
	if _, n := e.HalfOpen(); n != 1 || e.Stats().SourceSALimited.Load() != 1 {
		t.Fatalf("after the others expired: %d negotiating, limited %d; want 1, 1", n, e.Stats().SourceSALimited.Load())
	}
}

// TestQuickModeLimit: an authenticated peer starting Quick Mode after
// Quick Mode gets at most MaxChildren IPsec SAs on one ISAKMP SA; the rest
// are dropped and counted.
func TestQuickModeLimit(t *testing.T) {
	p := newSyncPair(t)
	p.eb.cfg.MaxChildren = 3
	for range 6 {
		p.ea.mu.Lock()
		for _, sa := range p.ea.sas {
			if err := sa.startQuickMode(nil); err != nil {
				t.Fatal(err)
			}
		}
		p.ea.unlockAndFlush()
		p.drain()
	}
	children := 0
	p.eb.mu.Lock()
	for _, sa := range p.eb.sas {
		children += len(sa.children)
	}
	p.eb.mu.Unlock()
	if children != 3 {
		t.Errorf("responder children: got %d, want 3", children)
	}
	if got := p.eb.Stats().QuickModeLimited.Load(); got == 0 {
		t.Errorf("QuickModeLimited not counted")
	}
}

// FuzzHalfOpenMM3 sends a fuzzed message carrying the cookies of a
// half-open Main Mode, from its address or another: the promotion path
// (admission, DH, teardown) never panics and the bounds hold.
func FuzzHalfOpenMM3(f *testing.F) {
	seed := AppendMessage(nil, Header{Exchange: ExchangeIdentityProtection},
		[]Payload{{PayloadKE, bytes.Repeat([]byte{7}, 256)}, {PayloadNonce, bytes.Repeat([]byte{9}, 32)}})
	f.Add(seed[16:], true)
	f.Add(seed[16:40], false)
	f.Fuzz(func(t *testing.T, rest []byte, sameAddr bool) {
		cs := &captureSender{}
		e, err := New(Config{Sender: cs, Clock: stacktest.NewClock(), PSK: psk("k"), CryptoWorkers: -1, MaxSAsPerSource: 1, MaxNegotiating: 1})
		if err != nil {
			t.Fatal(err)
		}
		local := netip.MustParseAddrPort("192.0.2.1:500")
		src := netip.MustParseAddrPort("203.0.113.9:500")
		e.Input(mm1(), local, src, false)
		if cs.count() != 1 {
			t.Fatalf("no MM2")
		}
		b := append(append([]byte{}, cs.out[0][:16]...), rest...)
		if len(b) >= HeaderLen {
			binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
		}
		from := src
		if !sameAddr {
			from = netip.MustParseAddrPort("198.51.100.1:500")
		}
		e.Input(b, local, from, false)
		e.Input(b, local, from, false)
		e.Tick()
		if w, n := e.HalfOpen(); w+n > 1 {
			t.Fatalf("half-open %d + negotiating %d from one MM1", w, n)
		}
	})
}

// TestSourceSALimitIPv6Prefix: IPv6 peers count per /64, so one host
// rotating through its /64 (privacy addresses, or an attacker) cannot
// multiply MaxSAsPerSource; another /64 is unaffected.
func TestSourceSALimitIPv6Prefix(t *testing.T) {
	clk := stacktest.NewClock()
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), CryptoWorkers: -1, MaxSAsPerSource: 2, HalfOpenTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("[2001:db8::1]:500")
	proven := func(src string) {
		ap := netip.MustParseAddrPort(src)
		e.Input(freshMM1(), local, ap, false)
		e.Input(mm3For(t, cs.out[len(cs.out)-1]), local, ap, false)
	}
	proven("[2001:db8:66::1]:500")
	proven("[2001:db8:66::2]:500")
	proven("[2001:db8:66::3:4]:500") // same /64: over the limit
	if got := e.Stats().SourceSALimited.Load(); got != 1 {
		t.Fatalf("SourceSALimited: got %d, want 1 (three addresses of one /64)", got)
	}
	proven("[2001:db8:66:1::1]:500") // the next /64
	if _, n := e.HalfOpen(); n != 3 || e.Stats().SourceSALimited.Load() != 1 {
		t.Fatalf("negotiating %d, limited %d; want 3, 1", n, e.Stats().SourceSALimited.Load())
	}
}
