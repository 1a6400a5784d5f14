package ipstack

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

func newListenStack(t *testing.T) *Stack {
	t.Helper()
	st, err := New(Config{Output: func([]byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.AddAddress(netip.MustParsePrefix("10.20.0.10/32")); err != nil {
		t.Fatal(err)
	}
	return st
}

// newListener is a stack with a socket on 10.20.0.10:9 (dst) and the
// source its tests send from.
func newListener(t *testing.T) (st *Stack, pc net.PacketConn, src, dst netip.AddrPort) {
	t.Helper()
	st = newListenStack(t)
	src = netip.MustParseAddrPort("10.10.8.17:40000")
	dst = netip.MustParseAddrPort("10.20.0.10:9")
	pc, err := st.ListenUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	return st, pc, src, dst
}

func readOne(t *testing.T, pc net.PacketConn) (string, netip.AddrPort) {
	t.Helper()
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), from.(*net.UDPAddr).AddrPort()
}

// fragments splits a UDP datagram built by appendUDP4 into two IPv4
// fragments (the first carries 16 bytes of the UDP segment).
func fragments(pkt []byte) [][]byte {
	hdr := pkt[:ipv4HeaderLen]
	body := pkt[ipv4HeaderLen:]
	mk := func(part []byte, off int, more bool) []byte {
		b := append(append([]byte(nil), hdr...), part...)
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		ff := uint16(off / 8)
		if more {
			ff |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:8], ff)
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:12], ^checksum.Checksum(b[:ipv4HeaderLen], 0))
		return b
	}
	return [][]byte{mk(body[:16], 0, true), mk(body[16:], 16, false)}
}

// TestListenUDPFastPath: a whole datagram to a ListenUDP socket bypasses
// gVisor (UDPFastIn), a bad checksum does not reach the socket, fragments
// still reach it through gVisor's reassembly, a wildcard socket is served
// too, a full queue drops and counts, Close ends reads and the fast path.
func TestListenUDPFastPath(t *testing.T) {
	st, pc, src, dst := newListener(t)

	ok1 := appendUDP4(nil, src, dst, 1, []byte("whole"))
	if err := st.InjectInbound(ok1); err != nil {
		t.Fatal(err)
	}
	if got, from := readOne(t, pc); got != "whole" || from != src {
		t.Fatalf("got %q from %v, want %q from %v", got, from, "whole", src)
	}
	if n := st.Stats.UDPFastIn.Load(); n != 1 {
		t.Fatalf("UDPFastIn = %d after one whole datagram, want 1", n)
	}
	// The allocation-free read, as *net.UDPConn has it.
	ap, ok := pc.(interface {
		ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
	})
	if !ok {
		t.Fatal("ListenUDP socket has no ReadFromUDPAddrPort")
	}
	_ = st.InjectInbound(ok1)
	buf := make([]byte, 64)
	if n, from, err := ap.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "whole" || from != src {
		t.Fatalf("ReadFromUDPAddrPort: %q from %v, %v", buf[:n], from, err)
	}

	bad := appendUDP4(nil, src, dst, 2, []byte("corrupt"))
	bad[len(bad)-1] ^= 0xff
	_ = st.InjectInbound(bad)
	big := make([]byte, 100)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	for _, f := range fragments(appendUDP4(nil, src, dst, 3, big)) {
		_ = st.InjectInbound(f)
	}
	// The corrupt datagram was injected first: if it got through, it is
	// what this read returns.
	if got, _ := readOne(t, pc); got != string(big) {
		t.Fatalf("after a corrupt datagram and a fragmented one, got %q, want the reassembled %d bytes", got, len(big))
	}
	if n := st.Stats.UDPFastIn.Load(); n != 2 {
		t.Fatalf("UDPFastIn = %d, want 2 (corrupt and fragmented datagrams are gVisor's)", n)
	}

	for i := 0; i < ListenQueueLen+10; i++ {
		_ = st.InjectInbound(appendUDP4(nil, src, dst, uint16(i), []byte{byte(i)}))
	}
	if n := st.Stats.UDPQueueFull.Load(); n != 10 {
		t.Fatalf("UDPQueueFull = %d after %d unread datagrams, want 10", n, ListenQueueLen+10)
	}
	for i := 0; i < ListenQueueLen; i++ {
		if got, _ := readOne(t, pc); got != string([]byte{byte(i)}) {
			t.Fatalf("datagram %d: got %q, want in order", i, got)
		}
	}
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	before := st.Stats.UDPFastIn.Load()
	_ = st.InjectInbound(ok1)
	if st.Stats.UDPFastIn.Load() != before {
		t.Fatal("a closed socket still takes fast-path datagrams")
	}

	// A wildcard socket on another port.
	wc, err := st.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	_ = st.InjectInbound(appendUDP4(nil, src, netip.MustParseAddrPort("10.20.0.10:7"), 9, []byte("any")))
	if got, from := readOne(t, wc); got != "any" || from != src {
		t.Fatalf("wildcard: got %q from %v", got, from)
	}
	if n := st.Stats.UDPFastIn.Load(); n != before+1 {
		t.Fatalf("UDPFastIn = %d, want %d (wildcard socket on the fast path)", n, before+1)
	}
	// Replies still go out through gVisor.
	if _, err := wc.WriteTo([]byte("back"), net.UDPAddrFromAddrPort(src)); err != nil {
		t.Fatal(err)
	}
}

// TestListenUDPRemovedAddress: after RemoveAddress the fast path no longer
// delivers to a socket bound to that address.
func TestListenUDPRemovedAddress(t *testing.T) {
	st := newListenStack(t)
	pc, err := st.ListenUDP(netip.MustParseAddrPort("10.20.0.10:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := st.RemoveAddress(netip.MustParseAddr("10.20.0.10")); err != nil {
		t.Fatal(err)
	}
	_ = st.InjectInbound(appendUDP4(nil, netip.MustParseAddrPort("10.10.8.17:1"), netip.MustParseAddrPort("10.20.0.10:9"), 1, []byte("x")))
	if n := st.Stats.UDPFastIn.Load(); n != 0 {
		t.Fatalf("UDPFastIn = %d for a removed address, want 0", n)
	}
}

// FuzzListenInbound feeds arbitrary packets to a stack with a fast-path
// listener: no panic; every packet is either queued or handed to gVisor.
func FuzzListenInbound(f *testing.F) {
	for _, s := range udp4Seeds() {
		f.Add(s)
	}
	f.Add(appendUDP4(nil, netip.MustParseAddrPort("10.10.8.17:1"), netip.MustParseAddrPort("10.20.0.10:9"), 1, []byte("x")))
	st, err := New(Config{Output: func([]byte) error { return nil }})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	if err := st.AddAddress(netip.MustParsePrefix("10.20.0.10/32")); err != nil {
		f.Fatal(err)
	}
	pc, err := st.ListenUDP(netip.MustParseAddrPort("10.20.0.10:9"))
	if err != nil {
		f.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_ = st.InjectInbound(pkt)
	})
}

// TestListenReadWithoutDeadline: a reader without a deadline takes queued
// datagrams in order (the path that skips the select), one with an expired
// deadline still fails when nothing is queued, and a closed socket fails
// reads even with datagrams still queued, as net.UDPConn does.
func TestListenReadWithoutDeadline(t *testing.T) {
	st, pc, src, dst := newListener(t)
	for i := range 3 {
		_ = st.InjectInbound(appendUDP4(nil, src, dst, uint16(i), []byte{'a' + byte(i)}))
	}
	buf := make([]byte, 16)
	for i := range 2 {
		n, from, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != string([]byte{'a' + byte(i)}) || from.(*net.UDPAddr).AddrPort() != src {
			t.Fatalf("read %d: %q from %v, %v", i, buf[:n], from, err)
		}
	}
	if _, _, err := pc.ReadFrom(buf); err != nil {
		t.Fatalf("third read: %v", err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline with nothing queued: %v, want os.ErrDeadlineExceeded", err)
	}
	_ = pc.SetReadDeadline(time.Time{})
	_ = st.InjectInbound(appendUDP4(nil, src, dst, 9, []byte("late")))
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close with a datagram queued: %v, want net.ErrClosed", err)
	}
}

// TestListenConcurrentProducers: four goroutines inject 20,000 datagrams
// each (their number and a sequence number) while one reader reads with
// short deadlines that keep expiring (the parked/woken path and the
// deadline path both run). Every datagram is read exactly once or counted
// in UDPQueueFull, and each producer's arrive in order: lost = the queue
// drops, duplicated = 0.
func TestListenConcurrentProducers(t *testing.T) {
	st, pc, src, dst := newListener(t)
	const producers, each = 4, 20000
	done := make(chan struct{})
	for p := range producers {
		go func() {
			for i := range each {
				var b [5]byte
				b[0] = byte(p)
				binary.BigEndian.PutUint32(b[1:], uint32(i))
				_ = st.InjectInbound(appendUDP4(nil, src, dst, uint16(i), b[:]))
				if i%500 == 0 {
					time.Sleep(time.Millisecond) // let the reader park
				}
			}
			done <- struct{}{}
		}()
	}
	next := make([]int, producers)
	var got, dups, timeouts int
	buf := make([]byte, 64)
	finished := 0
	for {
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			timeouts++
			select {
			case <-done:
				finished++
			default:
			}
			if finished == producers && int(st.Stats.UDPQueueFull.Load())+got == producers*each {
				break
			}
			if timeouts > 20000 {
				t.Fatalf("stalled: %d read, %d dropped of %d", got, st.Stats.UDPQueueFull.Load(), producers*each)
			}
			continue
		}
		if err != nil || n != 5 {
			t.Fatalf("read: %d bytes, %v", n, err)
		}
		p, seq := int(buf[0]), int(binary.BigEndian.Uint32(buf[1:]))
		if seq < next[p] {
			dups++
		}
		next[p] = seq + 1
		got++
	}
	drops := int(st.Stats.UDPQueueFull.Load())
	t.Logf("%d read, %d dropped (queue full), %d duplicated, %d read timeouts", got, drops, dups, timeouts)
	if dups != 0 || got+drops != producers*each {
		t.Fatalf("read %d + dropped %d != sent %d, duplicated %d", got, drops, producers*each, dups)
	}
}
