package esp

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzOpen feeds arbitrary packets to inbound SAs of every cipher family:
// Open must return an error or a payload inside the packet, never panic.
// Seeds are real sealed packets (which the fuzzer mutates) plus edge cases.
func FuzzOpen(f *testing.F) {
	suites := []Suite{allSuites[0], allSuites[4], allSuites[8]}
	for i, s := range suites {
		out, _ := newPair(f, s, 0x100, Options{})
		for _, n := range []int{0, 13, 100} {
			p, err := out.Seal(nil, bytes.Repeat([]byte{'l'}, n), NextHeaderUDP)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), p)
		}
	}
	f.Add(uint8(0), []byte{0, 0, 1, 0, 0, 0, 0, 1})
	f.Add(uint8(1), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, pkt []byte) {
		_, in := newPair(t, suites[int(which)%len(suites)], 0x100, Options{})
		orig := len(pkt)
		payload, _, err := in.Open(pkt)
		if err != nil {
			if payload != nil {
				t.Fatalf("error %v with a payload", err)
			}
			return
		}
		if len(payload) > orig {
			t.Fatalf("payload of %d bytes from a %d-byte packet", len(payload), orig)
		}
	})
}

// FuzzSealOpen checks the round trip for arbitrary payloads and next
// headers on every suite.
func FuzzSealOpen(f *testing.F) {
	f.Add(uint8(0), []byte("l2tp"), uint8(17))
	f.Add(uint8(3), []byte{}, uint8(4))
	f.Add(uint8(8), bytes.Repeat([]byte{0}, 255), uint8(17))
	f.Fuzz(func(t *testing.T, which uint8, payload []byte, nh uint8) {
		if nh == NextHeaderNone {
			return
		}
		out, in := newPair(t, allSuites[int(which)%len(allSuites)], 0x200, Options{})
		pkt, err := out.Seal(nil, payload, nh)
		if err != nil {
			t.Fatal(err)
		}
		got, gotNH, err := in.Open(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) || gotNH != nh {
			t.Fatalf("round trip: got %x/%d, want %x/%d", got, gotNH, payload, nh)
		}
	})
}

// FuzzClassify feeds arbitrary datagrams to the NAT-T classifier of a
// transport with one installed SA pair (the SA's real packets as seeds):
// it must count and drop or deliver, never panic.
func FuzzClassify(f *testing.F) {
	tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1,
		IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tr.Close() })
	suite := Suite{Cipher: CipherAESGCM16, KeyBits: 128}
	km := testKeymat(suite, 1)
	in, _ := NewSA(suite, 0x4242, km, Inbound, Options{})
	dummyOut, _ := NewSA(suite, 0x4343, km, Outbound, Options{})
	peer := netip.MustParseAddrPort("192.0.2.1:4500")
	if _, err := tr.AddSA(in, dummyOut, PeerConfig{Remote: peer}); err != nil {
		f.Fatal(err)
	}
	seal, _ := NewSA(suite, 0x4242, km, Outbound, Options{})
	for _, inner := range [][]byte{
		{0x06, 0xa5, 0x06, 0xa5, 0, 12, 0, 0, 0xc8, 0x02, 0, 12},
		{0x06, 0xa5, 0x06, 0xa5, 0, 99, 0, 0},
		{0x13, 0x88, 0x06, 0xa5, 0, 8, 0, 0},
	} {
		p, _ := seal.Seal(nil, inner, NextHeaderUDP)
		f.Add(p)
	}
	f.Add([]byte{0xff})
	f.Add([]byte{0, 0, 0, 0, 1, 2, 3})
	f.Add([]byte{0, 0, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr.classify(b, netip.AddrPort{}, peer)
		// Drain whatever was delivered so the queue never fills.
		for {
			select {
			case pkt := <-tr.l2tp.ch:
				if pkt.n > len(b) {
					t.Fatalf("delivered %d bytes from a %d-byte datagram", pkt.n, len(b))
				}
			default:
				return
			}
		}
	})
}
