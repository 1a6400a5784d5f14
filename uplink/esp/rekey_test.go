package esp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestTransportRekeyMakeBeforeBreak: the responder installs the new pair
// first; packets the initiator still seals with the old SA are decrypted;
// once the initiator switches, its packets use the new SPI; the old inbound
// SA disappears when the grace period ends.
func TestTransportRekeyMakeBeforeBreak(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	b.tr.retiredHook = make(chan uint32, 4)
	pA, pB, _ := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{})
	addrBefore := pB.Addr(0).String()
	send := func(tag string) {
		t.Helper()
		if _, err := a.tr.L2TP().WriteTo([]byte(tag), pA.Addr(0)); err != nil {
			t.Fatal(err)
		}
		got, from := read(t, b.tr.L2TP())
		if string(got) != tag {
			t.Fatalf("got %q, want %q", got, tag)
		}
		if from.String() != addrBefore {
			t.Fatalf("address changed across rekey: %q, want %q", from, addrBefore)
		}
	}
	send("before")
	aOut2, bIn2 := newPair(t, gcm128, 0x1002, Options{})
	bOut2, aIn2 := newPair(t, gcm128, 0x2002, Options{})
	if err := b.tr.Rekey(pB, bIn2, bOut2); err != nil {
		t.Fatal(err)
	}
	send("old SA during grace")
	if err := a.tr.Rekey(pA, aIn2, aOut2); err != nil {
		t.Fatal(err)
	}
	send("new SA")
	if got := bIn2.Stats().PacketsIn.Load(); got != 1 {
		t.Fatalf("new inbound SA opened %d packets, want 1", got)
	}
	// b's reply goes out on its new SA and a opens it with its new SA.
	if _, err := b.tr.L2TP().WriteTo([]byte("reply"), pB.Addr(0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, a.tr.L2TP()); string(got) != "reply" {
		t.Fatalf("got %q, want reply", got)
	}
	if aIn2.Stats().PacketsIn.Load() != 1 {
		t.Fatal("reply not opened by the new inbound SA")
	}
	clock.Advance(30 * time.Second)
	select {
	case spi := <-b.tr.retiredHook:
		if spi != 0x1001 {
			t.Fatalf("retired SPI %#x, want 0x1001", spi)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old inbound SA not retired after the grace period")
	}
	if _, ok := (*b.tr.sas.Load())[0x1001]; ok {
		t.Fatal("old SPI still installed")
	}
	send("after grace")
}

// TestTransportRekeyUnderTraffic rekeys both ends twice while packets
// sealed with the old SAs are still in flight (sent, not yet read); every
// packet must arrive exactly once.
func TestTransportRekeyUnderTraffic(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	pA, pB, _ := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{})
	const burst = 40 // well inside the socket buffer
	next := uint32(0)
	sendBurst := func() {
		t.Helper()
		for i := 0; i < burst; i++ {
			var p [4]byte
			binary.BigEndian.PutUint32(p[:], next)
			next++
			if _, err := a.tr.L2TP().WriteTo(p[:], pA.Addr(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[uint32]bool{}
	readAll := func() {
		t.Helper()
		buf := make([]byte, 64)
		for len(seen) < int(next) {
			b.tr.L2TP().SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := b.tr.L2TP().ReadFrom(buf)
			if err != nil {
				t.Fatalf("after %d of %d packets: %v", len(seen), next, err)
			}
			i := binary.BigEndian.Uint32(buf[:n])
			if seen[i] {
				t.Fatalf("packet %d delivered twice", i)
			}
			seen[i] = true
		}
	}
	for round, spi := range []uint32{0x10, 0x20} {
		sendBurst() // old SAs, in flight
		aOut2, bIn2 := newPair(t, gcm128, 0x1000+spi, Options{})
		bOut2, aIn2 := newPair(t, gcm128, 0x2000+spi, Options{})
		if err := b.tr.Rekey(pB, bIn2, bOut2); err != nil {
			t.Fatal(err)
		}
		sendBurst() // initiator still on the old SA
		if err := a.tr.Rekey(pA, aIn2, aOut2); err != nil {
			t.Fatal(err)
		}
		sendBurst() // new SA
		readAll()
		if n := bIn2.Stats().PacketsIn.Load(); n != burst {
			t.Fatalf("round %d: new SA opened %d packets, want %d", round, n, burst)
		}
	}
}

func TestTransportRekeyNoAutoRetire(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", Clock: clock, RekeyGrace: -1,
		IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	out1, in1 := newPair(t, gcm128, 1, Options{})
	out2, in2 := newPair(t, gcm128, 2, Options{})
	p, err := tr.AddSA(in1, out1, PeerConfig{Remote: netip.MustParseAddrPort("192.0.2.1:4500")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Rekey(p, in2, out2); err != nil {
		t.Fatal(err)
	}
	if p.Outbound() != out2 {
		t.Fatal("Rekey did not switch the outbound SA")
	}
	clock.Advance(time.Hour)
	if n := len(*tr.sas.Load()); n != 2 {
		t.Fatalf("%d inbound SAs after an hour with RekeyGrace < 0, want 2", n)
	}
	tr.RemoveSA(1)
	if _, ok := (*tr.sas.Load())[1]; ok || len(*tr.sas.Load()) != 1 {
		t.Fatal("RemoveSA(1) did not remove exactly the old SA")
	}
	if err := tr.Rekey(p, in2, out2); err == nil {
		t.Fatal("Rekey with an installed SPI accepted")
	}
}

func TestTransportRemovePair(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a := newEnd(t, clock)
	out1, in1 := newPair(t, gcm128, 1, Options{})
	out2, in2 := newPair(t, gcm128, 2, Options{})
	p, err := a.tr.AddSA(in1, out1, PeerConfig{Remote: netip.MustParseAddrPort("192.0.2.1:4500")})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.tr.Rekey(p, in2, out2); err != nil {
		t.Fatal(err)
	}
	a.tr.RemovePair(1, 1) // the old pair: traffic stays on the new one
	if p.Outbound() != out2 || len(*a.tr.sas.Load()) != 1 {
		t.Fatalf("after removing the old pair: out %v, %d inbound SAs", p.Outbound(), len(*a.tr.sas.Load()))
	}
	a.tr.RemovePair(2, 2) // the current pair
	if p.Outbound() != nil || len(*a.tr.sas.Load()) != 0 {
		t.Fatal("current pair not removed")
	}
	if _, err := a.tr.L2TP().WriteTo([]byte("x"), p.Addr(0)); !errors.Is(err, ErrNoSA) {
		t.Fatalf("write after RemovePair: err = %v, want ErrNoSA", err)
	}
	a.tr.RemovePair(99, 99) // unknown: no effect, no panic
}

// TestTransportAddInboundThenActivate: a Quick Mode responder installs the
// inbound SA alone (a new peer without outbound SA, then a rekey's SA next
// to the current pair); packets on it open at once while the outbound SA is
// unchanged; Activate then switches outbound and retires the older inbound
// SA after the grace period.
func TestTransportAddInboundThenActivate(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", Clock: clock, RekeyGrace: 10 * time.Second,
		IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	tr.retiredHook = make(chan uint32, 4)
	out1, in1 := newPair(t, gcm128, 1, Options{})
	out2, in2 := newPair(t, gcm128, 2, Options{})
	p, err := tr.AddSA(in1, nil, PeerConfig{Remote: netip.MustParseAddrPort("192.0.2.1:4500")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.L2TP().WriteTo([]byte("x"), p.Addr(0)); !errors.Is(err, ErrNoSA) {
		t.Fatalf("write before Activate: err = %v, want ErrNoSA", err)
	}
	if err := tr.Activate(p, in1, out1); err != nil {
		t.Fatal(err)
	}
	if p.Outbound() != out1 || len(*tr.sas.Load()) != 1 {
		t.Fatalf("after Activate: out %v, %d inbound SAs, want out1 and 1", p.Outbound(), len(*tr.sas.Load()))
	}
	if err := tr.AddInbound(p, in2, nil); err != nil {
		t.Fatal(err)
	}
	if p.Outbound() != out1 {
		t.Fatal("AddInbound switched the outbound SA")
	}
	if e, ok := (*tr.sas.Load())[2]; !ok || e.sa != in2 || e.peer != p {
		t.Fatal("AddInbound did not install SPI 2 for the peer")
	}
	clock.Advance(time.Hour) // AddInbound retires nothing
	if n := len(*tr.sas.Load()); n != 2 {
		t.Fatalf("%d inbound SAs after AddInbound and an hour, want 2", n)
	}
	if err := tr.AddInbound(p, in2, nil); err == nil {
		t.Fatal("AddInbound of an installed SPI accepted")
	}
	if err := tr.Activate(p, in2, out2); err != nil {
		t.Fatal(err)
	}
	if p.Outbound() != out2 {
		t.Fatal("Activate did not switch the outbound SA")
	}
	clock.Advance(10 * time.Second)
	select {
	case spi := <-tr.retiredHook:
		if spi != 1 {
			t.Fatalf("retired SPI %d, want 1", spi)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old inbound SA not retired after the grace period")
	}
	if _, ok := (*tr.sas.Load())[2]; !ok || len(*tr.sas.Load()) != 1 {
		t.Fatal("after the grace period want exactly SPI 2 installed")
	}
	other, err := tr.AddSA(in1, out1, PeerConfig{Remote: netip.MustParseAddrPort("192.0.2.2:4500")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Activate(other, in2, out2); err == nil {
		t.Fatal("Activate with another peer's inbound SPI accepted")
	}
}

// TestTransportActivateOnFirstPacket: a responder's pair given to
// AddInbound with its outbound SA becomes current as soon as a packet
// opens on the new inbound SA (the initiator has the pair), so the reply
// already uses the new SA without waiting for Activate.
func TestTransportActivateOnFirstPacket(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	pA, pB, _ := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{})
	aOut2, bIn2 := newPair(t, gcm128, 0x1002, Options{})
	bOut2, aIn2 := newPair(t, gcm128, 0x2002, Options{})
	if err := b.tr.AddInbound(pB, bIn2, bOut2); err != nil {
		t.Fatal(err)
	}
	if pB.Outbound().SPI() != 0x2001 {
		t.Fatalf("AddInbound switched outbound to %#x before any packet", pB.Outbound().SPI())
	}
	if err := a.tr.Rekey(pA, aIn2, aOut2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.tr.L2TP().WriteTo([]byte("first"), pA.Addr(0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, b.tr.L2TP()); string(got) != "first" {
		t.Fatalf("got %q, want first", got)
	}
	if pB.Outbound() != bOut2 || b.tr.Stats().EarlyActivations.Load() != 1 {
		t.Fatalf("after the first packet: outbound %#x, early activations %d; want %#x, 1",
			pB.Outbound().SPI(), b.tr.Stats().EarlyActivations.Load(), bOut2.SPI())
	}
	if _, err := b.tr.L2TP().WriteTo([]byte("reply"), pB.Addr(0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, a.tr.L2TP()); string(got) != "reply" || aIn2.Stats().PacketsIn.Load() != 1 {
		t.Fatalf("reply %q opened by the new SA %d times, want once", got, aIn2.Stats().PacketsIn.Load())
	}
	// A later Activate (HASH(3) processed) changes nothing and is accepted.
	if err := b.tr.Activate(pB, bIn2, bOut2); err != nil || pB.Outbound() != bOut2 {
		t.Fatalf("Activate after early activation: %v, outbound %#x", err, pB.Outbound().SPI())
	}
}
