//go:build linux

package esp

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"golang.org/x/sys/unix"
)

func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func pkt(n int, tag byte, to netip.AddrPort) outPkt {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag + byte(i)
	}
	return outPkt{buf: &b, n: n, to: to}
}

// TestBatchConnSpill sends five datagrams with one sendmmsg (loopback
// delivers them before the call returns) and reads them with one
// recvmmsg: two are larger than a slot, so the first of those lost its
// spilled tail to the second and is reported as such; the rest are intact,
// with their source.
func TestBatchConnSpill(t *testing.T) {
	rx, tx := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	rb, tb := newBatchConn(rx), newBatchConn(tx)
	if rb == nil || tb == nil {
		t.Fatal("no batched I/O on a Linux UDP socket")
	}
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	from := tx.LocalAddr().(*net.UDPAddr).AddrPort()
	sizes := []int{100, 3000, 50, 5000, 10}
	var pkts []outPkt
	for i, n := range sizes {
		pkts = append(pkts, pkt(n, byte(i), to))
	}
	if failed, err := tb.write(pkts); err != nil || failed != 0 {
		t.Fatalf("write: failed %d, %v", failed, err)
	}
	n, err := rb.read()
	if err != nil || n != len(sizes) {
		t.Fatalf("read = %d, %v; want %d datagrams in one batch", n, err, len(sizes))
	}
	for i := range n {
		p, src, ok, err := rb.msg(i)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if ok {
				t.Fatal("datagram 1 spilled before datagram 3 and must be reported overwritten")
			}
			continue
		}
		if !ok || src != from || !bytes.Equal(p, (*pkts[i].buf)[:sizes[i]]) {
			t.Fatalf("datagram %d: ok=%v from %v (want %v), %d bytes (want %d), content equal %v",
				i, ok, src, from, len(p), sizes[i], bytes.Equal(p, (*pkts[i].buf)[:sizes[i]]))
		}
	}
}

// TestBatchConnFamilies: a dual-stack (AF_INET6) socket writes to and
// reads from an IPv4 peer (v4-mapped on the wire, plain IPv4 to callers);
// an AF_INET socket refuses an IPv6 destination without failing the rest.
func TestBatchConnFamilies(t *testing.T) {
	v6, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
	testenv.Require(t, err == nil, "%s needs an IPv6 socket: %v", t.Name(), err)
	t.Cleanup(func() { v6.Close() })
	v4 := listenUDP(t, "127.0.0.1:0")
	b6, b4 := newBatchConn(v6), newBatchConn(v4)
	if b6 == nil || b4 == nil || !b6.v6 || b4.v6 {
		t.Fatalf("batch conns %v %v", b6, b4)
	}
	to4 := v4.LocalAddr().(*net.UDPAddr).AddrPort()
	if failed, err := b6.write([]outPkt{pkt(20, 1, to4)}); err != nil || failed != 0 {
		t.Fatalf("v6 socket to v4 peer: failed %d, %v", failed, err)
	}
	if n, err := b4.read(); err != nil || n != 1 {
		t.Fatalf("read %d, %v", n, err)
	}
	v6port := uint16(v6.LocalAddr().(*net.UDPAddr).Port)
	if _, from, ok, _ := b4.msg(0); !ok || from.Port() != v6port || !from.Addr().Is4() {
		t.Fatalf("v4 side saw %v ok=%v", from, ok)
	}
	// A GSO run from the dual-stack socket to the v4-mapped peer.
	run := []outPkt{pkt(700, 10, to4), pkt(700, 11, to4), pkt(700, 12, to4)}
	if failed, err := b6.write(run); err != nil || failed != 0 {
		t.Fatalf("v6 socket GSO to v4 peer: failed %d, %v", failed, err)
	}
	if n, err := b4.read(); err != nil || n != 3 {
		t.Fatalf("read %d, %v; want the 3 segments", n, err)
	}
	for i := range 3 {
		if p, _, ok, _ := b4.msg(i); !ok || !bytes.Equal(p, (*run[i].buf)[:700]) {
			t.Fatalf("segment %d differs", i)
		}
	}
	to6 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), v6port)
	bad := netip.MustParseAddrPort("[2001:db8::1]:4500")
	failed, err := b4.write([]outPkt{pkt(10, 2, bad), pkt(30, 3, to6)})
	if err != nil || failed != 1 {
		t.Fatalf("v4 socket: failed %d (want 1: the IPv6 destination), %v", failed, err)
	}
	if n, err := b6.read(); err != nil || n != 1 {
		t.Fatalf("read %d, %v", n, err)
	}
	if p, from, ok, _ := b6.msg(0); !ok || len(p) != 30 || from != to4 {
		t.Fatalf("v6 side got %d bytes from %v ok=%v, want 30 from %v (unmapped)", len(p), from, ok, to4)
	}
}

// TestTransportBatchedStream writes bursts back to back (queued and sent
// with sendmmsg) and reads them with recvmmsg: every datagram arrives once,
// intact and in order, in both modes.
func TestTransportBatchedStream(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(ioName(single), func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			mk := func() *Transport {
				tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1, SingleIO: single,
					IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { tr.Close() })
				return tr
			}
			a, c := mk(), mk()
			if (a.natt.out == nil) != single || (c.natt.batch == nil) != single {
				t.Fatalf("single=%v but batch=%v sender=%v", single, c.natt.batch != nil, a.natt.out != nil)
			}
			aOut, cIn := newPair(t, gcm128, 0x71, Options{})
			cOut, aIn := newPair(t, gcm128, 0x72, Options{})
			pa, err := a.AddSA(aIn, aOut, PeerConfig{Remote: c.NATTAddr()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.AddSA(cIn, cOut, PeerConfig{Remote: a.NATTAddr()}); err != nil {
				t.Fatal(err)
			}
			const bursts, per = 20, 48 // a burst fits the default socket buffer
			for k := range bursts {
				for i := range per {
					if _, err := a.L2TP().WriteTo(l2tpPayload(200, byte(k*per+i)), pa.Addr(0)); err != nil {
						t.Fatal(err)
					}
				}
				for i := range per {
					got, _ := read(t, c.L2TP())
					if want := l2tpPayload(200, byte(k*per+i)); !bytes.Equal(got, want) {
						t.Fatalf("burst %d datagram %d: got %x..., want %x...", k, i, got[:4], want[:4])
					}
				}
			}
			st := c.Stats()
			if st.ESPIn.Load() != bursts*per || a.Stats().ESPOut.Load() != bursts*per || a.Stats().SendErrors.Load() != 0 {
				t.Fatalf("ESPIn %d ESPOut %d SendErrors %d", st.ESPIn.Load(), a.Stats().ESPOut.Load(), a.Stats().SendErrors.Load())
			}
			if single && (st.Batches.Load() != 0 || a.Stats().SendBatches.Load() != 0) {
				t.Fatalf("single I/O counted batches: %d in, %d out", st.Batches.Load(), a.Stats().SendBatches.Load())
			}
			t.Logf("receive batches %d, send batches %d for %d datagrams", st.Batches.Load(), a.Stats().SendBatches.Load(), bursts*per)
		})
	}
}

// TestTransportFilteredConn: a FilteredUDPConn's Admit sees every datagram
// the transport reads, batched or not, and what it refuses never reaches
// IKE.
func TestTransportFilteredConn(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(ioName(single), func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			inner := listenUDP(t, "127.0.0.1:0")
			f := &admitFilter{c: inner}
			got := make(chan []byte, 8)
			tr, err := NewTransport(TransportConfig{NATTConn: f, KeepaliveInterval: -1, SingleIO: single,
				IKE: IKEHandlerFunc(func(b []byte, _, _ netip.AddrPort, _ bool) { got <- append([]byte(nil), b...) })})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr.Close() })
			if (tr.natt.batch == nil) != single {
				t.Fatalf("FilteredUDPConn: batch=%v with single=%v", tr.natt.batch != nil, single)
			}
			raw := rawSocket(t)
			to := net.UDPAddrFromAddrPort(tr.NATTAddr())
			raw.WriteToUDP([]byte{0, 0, 0, 0, 0xEE, 1}, to)
			raw.WriteToUDP([]byte{0, 0, 0, 0, 0xAA, 2}, to)
			select {
			case b := <-got:
				if !bytes.Equal(b, []byte{0xAA, 2}) {
					t.Fatalf("IKE got %x, want aa02 (ee01 refused)", b)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("admitted datagram not delivered")
			}
			if n := f.refusedCount(); n != 1 {
				t.Fatalf("refused %d, want 1", n)
			}
			if tr.Stats().IKEIn.Load() != 1 {
				t.Fatalf("IKEIn = %d, want 1", tr.Stats().IKEIn.Load())
			}
		})
	}
}

// admitFilter wraps a *net.UDPConn as a gateway's admission wrapper does.
type admitFilter struct {
	net.PacketConn
	c       *net.UDPConn
	mu      sync.Mutex
	refused int
}

func (f *admitFilter) ReadFrom(b []byte) (int, net.Addr, error)  { return f.c.ReadFrom(b) }
func (f *admitFilter) WriteTo(b []byte, a net.Addr) (int, error) { return f.c.WriteTo(b, a) }
func (f *admitFilter) Close() error                              { return f.c.Close() }
func (f *admitFilter) LocalAddr() net.Addr                       { return f.c.LocalAddr() }
func (f *admitFilter) UDPConn() *net.UDPConn                     { return f.c }
func (f *admitFilter) Admit(b []byte, _ netip.AddrPort) bool {
	if len(b) > NonESPMarkerLen && b[NonESPMarkerLen] == 0xEE {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		return false
	}
	return true
}

func (f *admitFilter) refusedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

// TestSenderCloseReleasesWriters: writers waiting for queue space when the
// transport closes return ErrClosed-wrapped errors, and no goroutine stays.
func TestSenderCloseReleasesWriters(t *testing.T) {
	stacktest.CheckGoroutines(t)
	tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1,
		IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
	if err != nil {
		t.Fatal(err)
	}
	sd := tr.natt.out
	// Hold the sender busy so that writers queue and then wait.
	sd.mu.Lock()
	sd.busy = true
	sd.mu.Unlock()
	to := netip.MustParseAddrPort("127.0.0.1:9")
	errs := make(chan error, sendQueueLen+4)
	for range sendQueueLen + 4 {
		go func() {
			bp := tr.bufPool.Get().(*[]byte)
			errs <- sd.send(outPkt{buf: bp, n: 10, to: to})
		}()
	}
	// sendQueueLen of them are queued (nil), 4 wait; Close releases those.
	for range sendQueueLen {
		if err := <-errs; err != nil {
			t.Fatalf("queued send: %v", err)
		}
	}
	tr.Close()
	for range 4 {
		if err := <-errs; err != ErrClosed {
			t.Fatalf("waiting writer got %v, want ErrClosed", err)
		}
	}
}

// TestBatchConnGSO: five equal datagrams to one destination leave as one
// UDP_SEGMENT message and arrive as five datagrams; a shorter one ends
// the run, a datagram to another destination starts a new message.
func TestBatchConnGSO(t *testing.T) {
	rx, rx2, tx := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	rb, rb2, tb := newBatchConn(rx), newBatchConn(rx2), newBatchConn(tx)
	requireGSOLayout(t, tb)
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	to2 := rx2.LocalAddr().(*net.UDPAddr).AddrPort()
	var pkts []outPkt
	for i := range 5 {
		pkts = append(pkts, pkt(1000, byte(i), to))
	}
	pkts = append(pkts, pkt(300, 5, to), pkt(1000, 6, to2))
	failed, err := tb.write(pkts)
	if err != nil || failed != 0 {
		t.Fatalf("write: failed %d, %v", failed, err)
	}
	if tb.noGSO || tb.scount != 2 || tb.msgs[0].count != 6 || tb.msgs[1].count != 1 {
		t.Fatalf("layout: %d messages, counts %d, %d (noGSO %v); want 2 messages of 6 and 1", tb.scount, tb.msgs[0].count, tb.msgs[1].count, tb.noGSO)
	}
	n, err := rb.read()
	if err != nil || n != 6 {
		t.Fatalf("read %d, %v; want the 6 segments as datagrams", n, err)
	}
	for i := range n {
		p, _, ok, _ := rb.msg(i)
		if !ok || !bytes.Equal(p, (*pkts[i].buf)[:pkts[i].n]) {
			t.Fatalf("segment %d: %d bytes, want %d, equal %v", i, len(p), pkts[i].n, bytes.Equal(p, (*pkts[i].buf)[:pkts[i].n]))
		}
	}
	if n, err := rb2.read(); err != nil || n != 1 {
		t.Fatalf("second destination: %d, %v", n, err)
	}
}

// TestBatchConnGSOFallback: a socket on which the kernel refuses GSO
// (SO_NO_CHECK: no UDP checksum, so no segmentation offload; EINVAL)
// still sends every datagram, one message each.
func TestBatchConnGSOFallback(t *testing.T) {
	rx, tx := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	rb, tb := newBatchConn(rx), newBatchConn(tx)
	requireGSOLayout(t, tb)
	rc, _ := tx.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	var pkts []outPkt
	for i := range 4 {
		pkts = append(pkts, pkt(500, byte(i), to))
	}
	failed, err := tb.write(pkts)
	if err != nil || failed != 0 {
		t.Fatalf("write: failed %d, %v", failed, err)
	}
	if tb.gsoErr != unix.EINVAL || tb.scount != 4 {
		t.Fatalf("GSO error %v, last layout %d messages; want EINVAL then 4 single messages", tb.gsoErr, tb.scount)
	}
	n, err := rb.read()
	if err != nil || n != 4 {
		t.Fatalf("read %d, %v", n, err)
	}
	for i := range n {
		if p, _, ok, _ := rb.msg(i); !ok || !bytes.Equal(p, (*pkts[i].buf)[:500]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

// TestSenderLonePacketsInline: datagrams that come after a pause are
// written by the caller (no hand-off to the sender goroutine, no batch);
// the pause is a precondition, not a synchronisation.
func TestSenderLonePacketsInline(t *testing.T) {
	stacktest.CheckGoroutines(t)
	mk := func() *Transport {
		tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	a, c := mk(), mk()
	aOut, cIn := newPair(t, gcm128, 0x81, Options{})
	cOut, aIn := newPair(t, gcm128, 0x82, Options{})
	pa, err := a.AddSA(aIn, aOut, PeerConfig{Remote: c.NATTAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSA(cIn, cOut, PeerConfig{Remote: a.NATTAddr()}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		time.Sleep(10 * inlineGap)
		if _, err := a.L2TP().WriteTo(l2tpPayload(100, byte(i)), pa.Addr(0)); err != nil {
			t.Fatal(err)
		}
		if got, _ := read(t, c.L2TP()); !bytes.Equal(got, l2tpPayload(100, byte(i))) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	if n := a.Stats().SendBatches.Load(); n != 0 || a.Stats().ESPOut.Load() != 5 {
		t.Fatalf("SendBatches %d (want 0: every datagram inline), ESPOut %d", n, a.Stats().ESPOut.Load())
	}
}

// TestSenderHoldBatchesBurst: between Hold and Release datagrams are
// queued, even the first after a pause (which would go inline), and leave
// in one batch at Release, in order.
func TestSenderHoldBatchesBurst(t *testing.T) {
	stacktest.CheckGoroutines(t)
	mk := func() *Transport {
		tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	a, c := mk(), mk()
	aOut, cIn := newPair(t, gcm128, 0x91, Options{})
	cOut, aIn := newPair(t, gcm128, 0x92, Options{})
	pa, err := a.AddSA(aIn, aOut, PeerConfig{Remote: c.NATTAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSA(cIn, cOut, PeerConfig{Remote: a.NATTAddr()}); err != nil {
		t.Fatal(err)
	}
	const n = 10               // < batchLen: nothing is written before Release
	time.Sleep(10 * inlineGap) // the first would go inline without Hold
	a.Hold()
	a.Hold() // holds nest
	for i := range n {
		if _, err := a.L2TP().WriteTo(l2tpPayload(100, byte(i)), pa.Addr(0)); err != nil {
			t.Fatal(err)
		}
	}
	a.Release()
	if got := a.Stats().SendBatches.Load(); got != 0 {
		t.Fatalf("SendBatches %d while still held once", got)
	}
	a.Release()
	for i := range n {
		if got, _ := read(t, c.L2TP()); !bytes.Equal(got, l2tpPayload(100, byte(i))) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	// The sender goroutine counts its batch after sendmmsg returns, which
	// may be after the datagrams were read: wait for the count.
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats().SendBatches.Load() == 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if got := a.Stats().SendBatches.Load(); got != 1 || a.Stats().ESPOut.Load() != n {
		t.Fatalf("SendBatches %d (want 1: the held burst in one sendmmsg), ESPOut %d", got, a.Stats().ESPOut.Load())
	}
}

// TestBatchConnGSOIPv6: a GSO run (UDP_SEGMENT) from an IPv6 socket to a
// native IPv6 peer (::1) is laid out as one message and arrives as its
// datagrams, intact and in order, from the sender's IPv6 address.
func TestBatchConnGSOIPv6(t *testing.T) {
	listen6 := func() *net.UDPConn {
		c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		testenv.Require(t, err == nil, "%s needs an IPv6 loopback: %v", t.Name(), err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	rx, tx := listen6(), listen6()
	rb, tb := newBatchConn(rx), newBatchConn(tx)
	if rb == nil || tb == nil || !tb.v6 {
		t.Fatal("no batched I/O on an IPv6 socket")
	}
	requireGSOLayout(t, tb)
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	from := tx.LocalAddr().(*net.UDPAddr).AddrPort()
	var pkts []outPkt
	for i := range 8 {
		pkts = append(pkts, pkt(1200, byte(i), to))
	}
	if failed, err := tb.write(pkts); err != nil || failed != 0 {
		t.Fatalf("write: failed %d, %v", failed, err)
	}
	if tb.noGSO || tb.scount != 1 || tb.msgs[0].count != 8 {
		t.Fatalf("layout: %d messages, first of %d (noGSO %v); want 1 GSO message of 8", tb.scount, tb.msgs[0].count, tb.noGSO)
	}
	n, err := rb.read() // loopback delivered them before write returned
	if err != nil || n != len(pkts) {
		t.Fatalf("read %d, %v; want the %d segments as datagrams", n, err, len(pkts))
	}
	for i := range n {
		p, src, ok, _ := rb.msg(i)
		if !ok || src != from || !bytes.Equal(p, (*pkts[i].buf)[:1200]) {
			t.Fatalf("segment %d: ok=%v from %v (want %v), %d bytes", i, ok, src, from, len(p))
		}
	}
}

// requireGSOLayout: the UDP_SEGMENT control message is laid out for
// 64-bit architectures (gsoCmsgSpace); elsewhere the batch conn never
// uses GSO, and the GSO tests skip loudly (fail in CI, which is amd64).
func requireGSOLayout(t *testing.T, b *batchConn) {
	t.Helper()
	testenv.Require(t, !b.noGSO, "%s needs the UDP GSO control-message layout (CmsgSpace(2) = %d, want %d on %s)",
		t.Name(), unix.CmsgSpace(2), gsoCmsgSpace, runtime.GOARCH)
}
