//go:build linux

package esp

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestBatchConnGRO: with UDP_GRO on the receiving socket, a GSO run from
// one sender (6 × 1000 B, then 300 B) comes up as one message and is split
// back into its datagrams, in order and intact; a lone datagram and a
// large one (IKE with certificates, 5000 B: no spill with GRO) from other
// writes follow as datagrams of their own.
func TestBatchConnGRO(t *testing.T) {
	rx, tx := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	rb, tb := newBatchConn(rx), newBatchConn(tx)
	requireGSOLayout(t, tb)
	if !rb.enableGRO() {
		t.Fatal("UDP_GRO refused by the kernel (Linux 5.0+ has it)")
	}
	defer rb.release()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	from := tx.LocalAddr().(*net.UDPAddr).AddrPort()
	var run []outPkt
	for i := range 6 {
		run = append(run, pkt(1000, byte(i), to))
	}
	run = append(run, pkt(300, 6, to))
	lone, big := []outPkt{pkt(40, 7, to)}, []outPkt{pkt(5000, 8, to)}
	for _, w := range [][]outPkt{run, lone, big} {
		if failed, err := tb.write(w); err != nil || failed != 0 {
			t.Fatalf("write: failed %d, %v", failed, err)
		}
	}
	want := append(append(append([]outPkt(nil), run...), lone...), big...)
	var got []outPkt
	coalesced := 0
	for len(got) < len(want) {
		n, err := rb.read() // loopback delivered them before write returned
		if err != nil || n == 0 {
			t.Fatalf("read %d, %v after %d of %d datagrams", n, err, len(got), len(want))
		}
		coalesced += rb.coalescedCount()
		for i := range n {
			p, src, ok, err := rb.msg(i)
			if err != nil || !ok || src != from {
				t.Fatalf("datagram %d: ok %v, err %v, from %v (want %v)", len(got), ok, err, src, from)
			}
			b := append([]byte(nil), p...)
			got = append(got, outPkt{buf: &b, n: len(b)})
		}
	}
	if len(got) != len(want) || coalesced != len(run) {
		t.Fatalf("%d datagrams (want %d), %d of them coalesced (want the run's %d)", len(got), len(want), coalesced, len(run))
	}
	for i := range want {
		if !bytes.Equal((*got[i].buf)[:got[i].n], (*want[i].buf)[:want[i].n]) {
			t.Fatalf("datagram %d: %d bytes, want %d (or content differs)", i, got[i].n, want[i].n)
		}
	}
}

// TestTransportGRO: a peer sends one UDP GSO run of 32 sealed ESP packets
// (RFC 3948 encapsulation, L2TP port 1701) to a Transport on loopback: the
// Transport's socket gets them as one GRO message (Stats.Coalesced = 32),
// and every one reaches the L2TP reader once, in order.
func TestTransportGRO(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	a, b := newEnd(t, clock), newEnd(t, clock)
	if b.tr.natt.batch == nil || b.tr.natt.batch.gro == nil {
		t.Fatal("the Transport did not turn UDP GRO on")
	}
	_, _, aOut := connect(t, a, b, 0x1001, 0x2001, PeerConfig{}, PeerConfig{RemotePort: L2TPPort})
	raw := rawSocket(t)
	tb := newBatchConn(raw)
	requireGSOLayout(t, tb)
	const count = batchLen
	var run []outPkt
	for i := range count {
		u := make([]byte, 8+1000)
		binary.BigEndian.PutUint16(u[0:], L2TPPort)
		binary.BigEndian.PutUint16(u[2:], L2TPPort)
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
		copy(u[8:], l2tpPayload(1000, byte(i)))
		sealed, err := aOut.Seal(nil, u, NextHeaderUDP)
		if err != nil {
			t.Fatal(err)
		}
		run = append(run, outPkt{buf: &sealed, n: len(sealed), to: b.tr.NATTAddr()})
	}
	if failed, err := tb.write(run); err != nil || failed != 0 || tb.scount != 1 {
		t.Fatalf("write: failed %d, %v, %d messages (want one GSO message)", failed, err, tb.scount)
	}
	for i := range count {
		got, _ := read(t, b.tr.L2TP())
		if want := l2tpPayload(1000, byte(i)); !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: got %x..., want %x...", i, got[:4], want[:4])
		}
	}
	st := b.tr.Stats()
	if st.Coalesced.Load() != count || st.ESPIn.Load() != count {
		t.Fatalf("Coalesced %d, ESPIn %d; want %d each", st.Coalesced.Load(), st.ESPIn.Load(), count)
	}
}
