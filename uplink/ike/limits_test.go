package ike

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/uplink/link/linktest"
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

func TestHalfOpenLimit(t *testing.T) {
	clk := linktest.NewClock()
	cs := &captureSender{}
	e, err := New(Config{Sender: cs, Clock: clk, PSK: psk("k"), MaxHalfOpen: 5, HalfOpenTTL: 10 * time.Second})
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
	if got := e.Stats().HalfOpenDropped.Load(); got != 5 {
		t.Errorf("HalfOpenDropped: got %d, want 5", got)
	}
	if got := cs.count(); got != 5 {
		t.Errorf("replies: got %d, want 5", got)
	}
	clk.Advance(11 * time.Second)
	e.Tick()
	if got := e.SACount(); got != 0 {
		t.Errorf("after the half-open timeout: %d SAs, want 0", got)
	}
	e.Input(freshMM1(), local, netip.MustParseAddrPort("203.0.113.200:500"), false)
	if got := e.SACount(); got != 1 {
		t.Errorf("after expiry a new Main Mode must be accepted: %d SAs", got)
	}
}

func TestPerSourceRateLimit(t *testing.T) {
	clk := linktest.NewClock()
	e, err := New(Config{Sender: &captureSender{}, Clock: clk, PSK: psk("k"), RatePerSource: 1, BurstPerSource: 4})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.1:500")
	src := netip.MustParseAddrPort("203.0.113.9:500")
	for i := 0; i < 10; i++ {
		e.Input(freshMM1(), local, src, false)
	}
	if got := e.Stats().RateLimited.Load(); got != 6 {
		t.Errorf("RateLimited: got %d, want 6", got)
	}
	// Another source is not affected; the first recovers with time.
	e.Input(freshMM1(), local, netip.MustParseAddrPort("203.0.113.10:500"), false)
	clk.Advance(2 * time.Second)
	e.Input(freshMM1(), local, src, false)
	if got := e.SACount(); got != 6 {
		t.Errorf("SAs: got %d, want 6", got)
	}
}

func TestMalformedInputCounted(t *testing.T) {
	e, err := New(Config{Sender: &captureSender{}, Clock: linktest.NewClock(), PSK: psk("k")})
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
		e, err := New(Config{Sender: &captureSender{}, Clock: linktest.NewClock(), PSK: psk("k")})
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
// sends HASH(2), then reports the same SA up on HASH(3); if HASH(3) never
// comes, it withdraws it.
func TestChildInbound(t *testing.T) {
	p := newSyncPair(t)
	got := kinds(p.evB)
	want := []EventKind{EventIKEUp, EventChildInbound, EventChildUp}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("responder events: got %v, want %v", got, want)
	}
	if p.evB[1].Child != p.evB[2].Child || p.evB[1].Child.InSPI != p.evA[1].Child.OutSPI {
		t.Errorf("inbound offer and child-up differ")
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
