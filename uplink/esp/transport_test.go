package esp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

type ikeMsg struct {
	b      []byte
	remote netip.AddrPort
	natt   bool
}

type end struct {
	tr  *Transport
	ike chan ikeMsg
}

func newEnd(t *testing.T, clock *stacktest.Clock) *end {
	t.Helper()
	e := &end{ike: make(chan ikeMsg, 16)}
	tr, err := NewTransport(TransportConfig{
		IKEAddr:  "127.0.0.1:0",
		NATTAddr: "127.0.0.1:0",
		Clock:    clock,
		IKE: IKEHandlerFunc(func(b []byte, local, remote netip.AddrPort, natt bool) {
			e.ike <- ikeMsg{append([]byte(nil), b...), remote, natt}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	e.tr = tr
	return e
}

var gcm128 = Suite{Cipher: CipherAESGCM16, KeyBits: 128}

// link installs a pair of SA pairs between a and b (a→b on spiAB, b→a on
// spiBA) and returns each side's Peer.
func connect(t *testing.T, a, b *end, spiAB, spiBA uint32, pa, pb PeerConfig) (pA, pB *Peer, aOut *SA) {
	t.Helper()
	aOut, bIn := newPair(t, gcm128, spiAB, Options{})
	bOut, aIn := newPair(t, gcm128, spiBA, Options{})
	if pa.Remote == (netip.AddrPort{}) {
		pa.Remote = b.tr.NATTAddr()
	}
	if pb.Remote == (netip.AddrPort{}) {
		pb.Remote = a.tr.NATTAddr()
	}
	var err error
	if pA, err = a.tr.AddSA(aIn, aOut, pa); err != nil {
		t.Fatal(err)
	}
	if pB, err = b.tr.AddSA(bIn, bOut, pb); err != nil {
		t.Fatal(err)
	}
	return pA, pB, aOut
}

func read(t *testing.T, c net.PacketConn) ([]byte, *Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, addr, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return buf[:n], addr.(*Addr)
}

func rawSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func l2tpPayload(n int, tag byte) []byte {
	p := make([]byte, n)
	p[0], p[1] = 0xc8, 0x02 // looks like an L2TP control header
	for i := 2; i < n; i++ {
		p[i] = tag + byte(i)
	}
	return p
}

func TestTransportL2TPBothWays(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	pA, pB, _ := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{})
	if pB.TakeReceived() {
		t.Fatal("TakeReceived true before any ESP arrived")
	}
	for i, n := range []int{12, 200, 1400, 1460} {
		want := l2tpPayload(n, byte(i))
		if _, err := a.tr.L2TP().WriteTo(want, pA.Addr(0)); err != nil {
			t.Fatal(err)
		}
		got, from := read(t, b.tr.L2TP())
		if !bytes.Equal(got, want) {
			t.Fatalf("b got %d bytes, want %d (%x…)", len(got), len(want), got[:8])
		}
		if from.Peer() != pB || from.Port() != L2TPPort || from.String() != pB.Addr(0).String() {
			t.Fatalf("b saw addr %v (peer %p), want %v (peer %p)", from, from.Peer(), pB.Addr(0), pB)
		}
		// The mark dead peer detection reads: set by what arrived, once.
		if !pB.TakeReceived() || pB.TakeReceived() {
			t.Fatal("TakeReceived: want true once after a datagram arrived, then false")
		}
		// Reply to the address ReadFrom gave us.
		if _, err := b.tr.L2TP().WriteTo(want[:n/2], from); err != nil {
			t.Fatal(err)
		}
		got, _ = read(t, a.tr.L2TP())
		if !bytes.Equal(got, want[:n/2]) {
			t.Fatalf("a got %d bytes, want %d", len(got), n/2)
		}
	}
	if got := b.tr.Stats().ESPIn.Load(); got != 4 {
		t.Fatalf("b ESPIn = %d, want 4", got)
	}
	if got := a.tr.Stats().ESPOut.Load(); got != 4 {
		t.Fatalf("a ESPOut = %d, want 4", got)
	}
}

// TestTransportL2TPHandler: with a handler set, opened L2TP datagrams go
// to it (with the peer's address) and not to ReadFrom's queue; after the
// PacketConn view is closed the handler gets nothing more.
func TestTransportL2TPHandler(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	pA, pB, _ := connect(t, a, b, 0x1101, 0x2101, PeerConfig{}, PeerConfig{})
	type got struct {
		b    []byte
		from *Addr
	}
	ch := make(chan got, 4)
	b.tr.SetL2TPHandler(func(p []byte, from *Addr) { ch <- got{append([]byte(nil), p...), from} })
	for i, n := range []int{12, 1400} {
		want := l2tpPayload(n, byte(i))
		if _, err := a.tr.L2TP().WriteTo(want, pA.Addr(0)); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-ch:
			if !bytes.Equal(g.b, want) || g.from.Peer() != pB || g.from.Port() != L2TPPort {
				t.Fatalf("handler got %d bytes from %v, want %d from %v", len(g.b), g.from, n, pB.Addr(0))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the handler got nothing")
		}
	}
	if st := b.tr.Stats(); st.ESPIn.Load() != 2 || st.QueueDrops.Load() != 0 {
		t.Fatalf("ESPIn %d, QueueDrops %d; want 2, 0", st.ESPIn.Load(), st.QueueDrops.Load())
	}
	// Back to the queue: ReadFrom gets the next one.
	b.tr.SetL2TPHandler(nil)
	if _, err := a.tr.L2TP().WriteTo(l2tpPayload(100, 9), pA.Addr(0)); err != nil {
		t.Fatal(err)
	}
	if g, _ := read(t, b.tr.L2TP()); !bytes.Equal(g, l2tpPayload(100, 9)) {
		t.Fatal("ReadFrom after the handler was removed: wrong datagram")
	}
	// A closed view: the handler is not called (the L2TP endpoint that
	// owned it is gone). The datagram is opened and counted first.
	b.tr.SetL2TPHandler(func(p []byte, from *Addr) { ch <- got{p, from} })
	b.tr.L2TP().Close()
	for i := range 2 {
		if _, err := a.tr.L2TP().WriteTo(l2tpPayload(100, byte(10+i)), pA.Addr(0)); err != nil {
			t.Fatal(err)
		}
	}
	// The reader counts a datagram before delivering it: once the second
	// is counted, the first has been through deliver.
	deadline := time.Now().Add(5 * time.Second)
	for b.tr.Stats().ESPIn.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b.tr.Stats().ESPIn.Load() != 5 {
		t.Fatalf("ESPIn %d, want 5", b.tr.Stats().ESPIn.Load())
	}
	select {
	case g := <-ch:
		t.Fatalf("handler called after Close with %d bytes", len(g.b))
	default:
	}
}

// TestTransportDropsBadESP injects packets from a raw socket: a replayed
// copy, tampered copies, an unknown SPI, a short datagram, and payloads
// outside the selectors. Each is dropped and counted; a valid packet from
// the raw socket moves the peer's address (NAT rebinding).
func TestTransportDropsBadESP(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	_, pB, aOut := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{RemotePort: L2TPPort})
	raw := rawSocket(t)
	dst := net.UDPAddrFromAddrPort(b.tr.NATTAddr())
	udp := func(src, dstPort uint16, payload []byte) []byte {
		u := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(u[0:], src)
		binary.BigEndian.PutUint16(u[2:], dstPort)
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
		copy(u[8:], payload)
		return u
	}
	send := func(p []byte) {
		t.Helper()
		if _, err := raw.WriteToUDP(p, dst); err != nil {
			t.Fatal(err)
		}
	}
	good, err := aOut.Seal(nil, udp(1701, 1701, []byte("first")), NextHeaderUDP)
	if err != nil {
		t.Fatal(err)
	}
	send(good)
	if got, _ := read(t, b.tr.L2TP()); string(got) != "first" {
		t.Fatalf("got %q, want first", got)
	}
	if got, want := pB.Remote(), raw.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
		t.Fatalf("peer remote = %v after authenticated packet from %v, want it followed", got, want)
	}
	send(good) // replay
	tampered, _ := aOut.Seal(nil, udp(1701, 1701, []byte("tampered")), NextHeaderUDP)
	tampered[len(tampered)-20] ^= 0x80
	send(tampered)
	unknown := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(unknown, 0xdead)
	send(unknown)
	send([]byte{1, 2, 3})
	wrongPort, _ := aOut.Seal(nil, udp(5000, 1701, []byte("x")), NextHeaderUDP)
	send(wrongPort)
	notUDP, _ := aOut.Seal(nil, udp(1701, 1701, []byte("x")), NextHeaderIPv4)
	send(notUDP)
	badLen := udp(1701, 1701, []byte("x"))
	binary.BigEndian.PutUint16(badLen[4:], 200)
	badLenPkt, _ := aOut.Seal(nil, badLen, NextHeaderUDP)
	send(badLenPkt)
	// A final good packet: when it arrives, everything before it has been
	// processed (one reader goroutine, in order on loopback).
	last, _ := aOut.Seal(nil, udp(1701, 1701, []byte("last")), NextHeaderUDP)
	send(last)
	if got, _ := read(t, b.tr.L2TP()); string(got) != "last" {
		t.Fatalf("got %q, want last", got)
	}
	st := b.tr.Stats()
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"OpenFailures (replay+tamper)", st.OpenFailures.Load(), 2},
		{"UnknownSPI", st.UnknownSPI.Load(), 1},
		{"Malformed (short + bad UDP length)", st.Malformed.Load(), 2},
		{"SelectorDrops (port + next header)", st.SelectorDrops.Load(), 2},
		{"ESPIn", st.ESPIn.Load(), 2},
		{"Rebinds", st.Rebinds.Load(), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	inStats := (*b.tr.sas.Load())[0x1001].sa.Stats()
	if inStats.ReplayDrops.Load() != 1 || inStats.AuthFailures.Load() != 1 {
		t.Errorf("SA ReplayDrops = %d, AuthFailures = %d; want 1, 1", inStats.ReplayDrops.Load(), inStats.AuthFailures.Load())
	}
}

func TestTransportClassifiesNATT(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	b := newEnd(t, clock)
	raw := rawSocket(t)
	natt := net.UDPAddrFromAddrPort(b.tr.NATTAddr())
	ike := net.UDPAddrFromAddrPort(b.tr.IKEAddr())
	raw.WriteToUDP([]byte{0xFF}, natt)
	raw.WriteToUDP([]byte{0, 0, 0, 0, 0xAA, 0xBB}, natt)
	raw.WriteToUDP([]byte{0xCC, 0xDD}, ike)
	from := raw.LocalAddr().(*net.UDPAddr).AddrPort()
	// Two sockets, two reader goroutines: the order between them is not
	// fixed, so match by port.
	want := map[bool][]byte{true: {0xAA, 0xBB}, false: {0xCC, 0xDD}}
	for range 2 {
		select {
		case got := <-b.ike:
			if !bytes.Equal(got.b, want[got.natt]) || got.remote != from {
				t.Fatalf("IKE input %x from %v natt=%v, want %x from %v", got.b, got.remote, got.natt, want[got.natt], from)
			}
			delete(want, got.natt)
		case <-time.After(5 * time.Second):
			t.Fatal("IKE message not delivered")
		}
	}
	// The keepalive was sent first on the same socket, so it has been
	// classified by now.
	if got := b.tr.Stats().KeepalivesIn.Load(); got != 1 {
		t.Fatalf("KeepalivesIn = %d, want 1", got)
	}

	// SendIKE adds the marker on NAT-T and not on 500.
	if err := b.tr.SendIKE([]byte{1, 2, 3}, netip.AddrPort{}, from, true); err != nil {
		t.Fatal(err)
	}
	if err := b.tr.SendIKE([]byte{4, 5}, netip.AddrPort{}, from, false); err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for _, want := range [][]byte{{0, 0, 0, 0, 1, 2, 3}, {4, 5}} {
		n, _, err := raw.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("peer received %x, want %x", buf[:n], want)
		}
	}
}

func TestTransportSendsKeepalives(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a := newEnd(t, clock)
	// Set before the first tick (the loop reads it only after a tick).
	a.tr.tickHook = make(chan struct{}, 8)
	raw := rawSocket(t)
	aOut, _ := newPair(t, gcm128, 1, Options{})
	_, aIn := newPair(t, gcm128, 2, Options{})
	p, err := a.tr.AddSA(aIn, aOut, PeerConfig{Remote: raw.LocalAddr().(*net.UDPAddr).AddrPort(), Keepalive: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	expect := func(what string, wantLen int) {
		t.Helper()
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := raw.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n != wantLen || (wantLen == 1 && buf[0] != 0xFF) {
			t.Fatalf("%s: got %x", what, buf[:n])
		}
	}
	for i := 0; i < 2; i++ {
		clock.Advance(20 * time.Second)
		expect("keepalive", 1)
	}
	// Traffic in the interval replaces the keepalive (RFC 3948 §4).
	if _, err := a.tr.L2TP().WriteTo([]byte("data"), p.Addr(0)); err != nil {
		t.Fatal(err)
	}
	expect("ESP", len("data")+UDPHeaderLen+aOut.Overhead(len("data")+UDPHeaderLen))
	clock.Advance(20 * time.Second) // skipped: ESP was sent
	for tick := 1; tick <= 3; tick++ {
		select {
		case <-a.tr.tickHook:
		case <-time.After(5 * time.Second):
			t.Fatalf("keepalive tick %d not handled", tick)
		}
	}
	clock.Advance(20 * time.Second) // idle again: keepalive
	expect("keepalive after idle interval", 1)
	<-a.tr.tickHook // the fourth tick is done counting
	if got := a.tr.Stats().KeepalivesOut.Load(); got != 3 {
		t.Fatalf("KeepalivesOut = %d, want 3 (one interval skipped)", got)
	}
}

// TestTransportTwoClientsBehindOneNAT: two clients share an outer address
// (127.0.0.1) and both use inner port 1701; the gateway tells them apart.
func TestTransportTwoClientsBehindOneNAT(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	gw := newEnd(t, clock)
	c1, c2 := newEnd(t, clock), newEnd(t, clock)
	p1, g1, _ := connect(t, c1, gw, 0x11, 0x21, PeerConfig{}, PeerConfig{})
	p2, g2, _ := connect(t, c2, gw, 0x12, 0x22, PeerConfig{}, PeerConfig{})
	c1.tr.L2TP().WriteTo([]byte("from c1"), p1.Addr(0))
	got1, from1 := read(t, gw.tr.L2TP())
	c2.tr.L2TP().WriteTo([]byte("from c2"), p2.Addr(0))
	got2, from2 := read(t, gw.tr.L2TP())
	if string(got1) != "from c1" || string(got2) != "from c2" {
		t.Fatalf("got %q, %q", got1, got2)
	}
	if from1.String() == from2.String() {
		t.Fatalf("both clients map to %q", from1)
	}
	if from1.Peer() != g1 || from2.Peer() != g2 || from1.Port() != 1701 || from2.Port() != 1701 {
		t.Fatal("addresses name the wrong peers")
	}
	gw.tr.L2TP().WriteTo([]byte("to c2"), from2)
	gw.tr.L2TP().WriteTo([]byte("to c1"), from1)
	if got, _ := read(t, c2.tr.L2TP()); string(got) != "to c2" {
		t.Fatalf("c2 got %q", got)
	}
	if got, _ := read(t, c1.tr.L2TP()); string(got) != "to c1" {
		t.Fatalf("c1 got %q", got)
	}
}

func TestTransportPacketConnErrors(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	pA, _, _ := connect(t, a, b, 1, 2, PeerConfig{}, PeerConfig{})
	c := a.tr.L2TP()
	c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: err = %v, want ErrDeadlineExceeded", err)
	}
	// A blocked read is woken when the deadline moves into the past.
	done := make(chan error, 1)
	c.SetReadDeadline(time.Time{})
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); done <- err }()
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("moved deadline: err = %v, want ErrDeadlineExceeded", err)
	}
	if _, err := c.WriteTo([]byte("x"), &net.UDPAddr{}); !errors.Is(err, ErrAddr) {
		t.Fatalf("foreign addr: err = %v, want ErrAddr", err)
	}
	a.tr.RemovePeer(pA)
	if _, err := c.WriteTo([]byte("x"), pA.Addr(0)); !errors.Is(err, ErrNoSA) {
		t.Fatalf("removed peer: err = %v, want ErrNoSA", err)
	}
	a.tr.Close()
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: err = %v, want net.ErrClosed", err)
	}
}

// TestTransportRebindOnlyOnNewest: a packet that is authentic and unseen
// but older than the newest one is delivered, yet does not move the peer.
func TestTransportRebindOnlyOnNewest(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	_, pB, aOut := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{})
	inner := []byte{0x06, 0xa5, 0x06, 0xa5, 0, 9, 0, 0, 'x'}
	older, _ := aOut.Seal(nil, inner, NextHeaderUDP)
	newer, _ := aOut.Seal(nil, inner, NextHeaderUDP)
	raw1, raw2 := rawSocket(t), rawSocket(t)
	dst := net.UDPAddrFromAddrPort(b.tr.NATTAddr())
	raw1.WriteToUDP(newer, dst)
	read(t, b.tr.L2TP())
	raw2.WriteToUDP(older, dst)
	read(t, b.tr.L2TP())
	if got, want := pB.Remote(), raw1.LocalAddr().(*net.UDPAddr).AddrPort(); got != want {
		t.Fatalf("peer remote = %v, want %v (the sender of the newest packet)", got, want)
	}
	if got := b.tr.Stats().Rebinds.Load(); got != 1 {
		t.Fatalf("Rebinds = %d, want 1", got)
	}
}

// TestTransportSlowIKEDoesNotStallESP blocks the IKE handler (as a
// Diffie-Hellman computation under a flood would) and checks that ESP still
// flows and that IKE beyond the queue is dropped and counted.
func TestTransportSlowIKEDoesNotStallESP(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", Clock: clock, IKEQueue: 1,
		IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {
			entered <- struct{}{}
			<-release
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	t.Cleanup(func() { close(release) }) // runs first: unblock the handler
	aOut, bIn := newPair(t, gcm128, 7, Options{})
	bOut, _ := newPair(t, gcm128, 8, Options{})
	raw := rawSocket(t)
	if _, err := tr.AddSA(bIn, bOut, PeerConfig{Remote: raw.LocalAddr().(*net.UDPAddr).AddrPort()}); err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(tr.NATTAddr())
	ike := []byte{0, 0, 0, 0, 1, 2, 3, 4}
	raw.WriteToUDP(ike, dst)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("IKE handler not called")
	}
	raw.WriteToUDP(ike, dst) // queued
	raw.WriteToUDP(ike, dst) // dropped
	esp, _ := aOut.Seal(nil, []byte{0x06, 0xa5, 0x06, 0xa5, 0, 10, 0, 0, 'o', 'k'}, NextHeaderUDP)
	raw.WriteToUDP(esp, dst)
	if got, _ := read(t, tr.L2TP()); string(got) != "ok" {
		t.Fatalf("got %q, want ok while IKE is blocked", got)
	}
	if got := tr.Stats().IKEDrops.Load(); got != 1 {
		t.Fatalf("IKEDrops = %d, want 1", got)
	}
	if got := tr.Stats().IKEIn.Load(); got != 3 {
		t.Fatalf("IKEIn = %d, want 3", got)
	}
}

// TestTransportIPv6 runs the L2TP exchange over IPv6 loopback outer
// addresses; the peer's address must compare equal (no rebinding).
func TestTransportIPv6(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	mk := func(addr string) *Transport {
		tr, err := NewTransport(TransportConfig{NATTAddr: addr, Clock: clock,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			t.Fatalf("listen %s: %v", addr, err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	a, b := mk("[::1]:0"), mk("[::1]:0")
	aOut, bIn := newPair(t, gcm128, 0x61, Options{})
	bOut, aIn := newPair(t, gcm128, 0x62, Options{})
	pA, err := a.AddSA(aIn, aOut, PeerConfig{Remote: b.NATTAddr()})
	if err != nil {
		t.Fatal(err)
	}
	pB, err := b.AddSA(bIn, bOut, PeerConfig{Remote: a.NATTAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.L2TP().WriteTo([]byte("v6"), pA.Addr(0)); err != nil {
		t.Fatal(err)
	}
	if got, from := read(t, b.L2TP()); string(got) != "v6" || from.Peer() != pB {
		t.Fatalf("got %q from %v", got, from)
	}
	if pB.Remote() != a.NATTAddr() || b.Stats().Rebinds.Load() != 0 {
		t.Fatalf("peer remote %v (rebinds %d), want %v unchanged", pB.Remote(), b.Stats().Rebinds.Load(), a.NATTAddr())
	}
}

func TestNewTransportErrors(t *testing.T) {
	h := IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})
	for name, cfg := range map[string]TransportConfig{
		"no IKE handler":    {NATTAddr: "127.0.0.1:0"},
		"no NAT-T socket":   {IKE: h},
		"bad NAT-T address": {IKE: h, NATTAddr: "127.0.0.1:notaport"},
		"bad IKE address":   {IKE: h, NATTAddr: "127.0.0.1:0", IKEAddr: "256.0.0.1:500"},
	} {
		if tr, err := NewTransport(cfg); err == nil {
			tr.Close()
			t.Errorf("%s: NewTransport succeeded, want an error", name)
		}
	}
}
