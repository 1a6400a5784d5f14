package esp

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/esp/esptest"
)

// TestTransportOverImpairedPipe runs two transports over an in-memory pipe
// that duplicates and reorders: every L2TP datagram arrives exactly once,
// each duplicate is dropped by the replay window and counted.
func TestTransportOverImpairedPipe(t *testing.T) {
	stacktest.CheckGoroutines(t)
	clock := stacktest.NewClock()
	pipe := stacktest.NewPipe(stacktest.PipeConfig{AtoB: stacktest.Impairment{DupPercent: 20, ReorderPercent: 20}, Seed: 7})
	addrA, addrB := netip.MustParseAddrPort("192.0.2.10:4500"), netip.MustParseAddrPort("203.0.113.1:4500")
	mk := func(pc *stacktest.PipeConn, local, remote netip.AddrPort) *Transport {
		tr, err := NewTransport(TransportConfig{NATTConn: esptest.Wrap(pc, local, remote), Clock: clock,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	a, b := mk(pipe.A, addrA, addrB), mk(pipe.B, addrB, addrA)
	if a.NATTAddr() != addrA {
		t.Fatalf("NATTAddr = %v, want %v", a.NATTAddr(), addrA)
	}
	aOut, bIn := newPair(t, gcm128, 0x51, Options{})
	bOut, aIn := newPair(t, gcm128, 0x52, Options{})
	pA, err := a.AddSA(aIn, aOut, PeerConfig{Remote: addrB})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddSA(bIn, bOut, PeerConfig{Remote: addrA}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 0; i < n+2; i++ { // two more to flush a held-back datagram
		var p [4]byte
		binary.BigEndian.PutUint32(p[:], uint32(i))
		if _, err := a.L2TP().WriteTo(p[:], pA.Addr(0)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint32]bool{}
	buf := make([]byte, 16)
	originals := 0
	// Read until every original arrived, then until the link is quiet (the
	// flush datagrams and the duplicates' fate are settled by then).
	for {
		wait := 5 * time.Second
		if originals == n {
			wait = 100 * time.Millisecond
		}
		b.L2TP().SetReadDeadline(time.Now().Add(wait))
		k, _, err := b.L2TP().ReadFrom(buf)
		if err != nil {
			if originals == n {
				break
			}
			t.Fatalf("after %d of %d datagrams: %v", originals, n, err)
		}
		i := binary.BigEndian.Uint32(buf[:k])
		if seen[i] {
			t.Fatalf("datagram %d delivered twice", i)
		}
		seen[i] = true
		if i < n {
			originals++
		}
	}
	dups, drops := pipe.Stats.Duplicated.Load(), bIn.Stats().ReplayDrops.Load()
	if dups == 0 || pipe.Stats.Reordered.Load() == 0 {
		t.Fatalf("pipe duplicated %d and reordered %d: impairment not exercised", dups, pipe.Stats.Reordered.Load())
	}
	if drops != dups {
		t.Fatalf("ReplayDrops = %d, want %d (one per duplicate)", drops, dups)
	}
}
