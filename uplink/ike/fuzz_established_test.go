package ike

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// syncPair is two engines joined by a synchronous queue.
type syncPair struct {
	q      []queued
	ea, eb *Engine
	clk    *stacktest.Clock
	evA    []Event
	evB    []Event
}

func (p *syncPair) drain() {
	for n := 0; len(p.q) > 0 && n < 1000; n++ {
		m := p.q[0]
		p.q = p.q[1:]
		m.to.Input(m.b, m.local, m.remote, m.natt)
	}
}

func newSyncPair(tb testing.TB) *syncPair {
	p := &syncPair{clk: stacktest.NewClock()}
	cfg := func(s queueSender, evs *[]Event) Config {
		// CryptoWorkers -1: the queue is drained synchronously.
		return Config{Sender: s, Clock: p.clk, PSK: psk("fuzz"), CryptoWorkers: -1, IKEProposals: MustProposals("aes128-sha256-ecp256"),
			ESPProposals: MustESPProposals("aes128gcm16,aes128gcm16-ecp256"), OnEvent: func(ev Event) { *evs = append(*evs, ev) }}
	}
	var err error
	if p.ea, err = New(cfg(queueSender{q: &p.q, peer: &p.eb}, &p.evA)); err != nil {
		tb.Fatal(err)
	}
	if p.eb, err = New(cfg(queueSender{q: &p.q, peer: &p.ea}, &p.evB)); err != nil {
		tb.Fatal(err)
	}
	if err := p.ea.Dial(netip.MustParseAddrPort("10.0.0.2:500"), netip.MustParseAddrPort("192.0.2.1:500")); err != nil {
		tb.Fatal(err)
	}
	p.drain()
	return p
}

// FuzzAuthenticatedPhase2 sends the established responder Quick Mode and
// informational messages whose payload chain is fuzzed but which carry a
// valid HASH(1) and encryption, so the fuzzer reaches the parsers of
// authenticated phase 2 data (SA, KE, ID, NAT-OA, Notify, Delete).
func FuzzAuthenticatedPhase2(f *testing.F) {
	sa := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{{Num: 1, Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4},
		Transforms: []Transform{phase2Transform(1, MustESPProposals("aes128gcm16")[0], encapUDPTransport, 3600e9, 0)}}}}
	seed := appendPayloads(nil, []Payload{{PayloadSA, sa.Append(nil)}, {PayloadNonce, make([]byte, 16)},
		{PayloadID, AddrID(netip.MustParseAddr("10.0.0.2"), 17, 1701).Append(nil)},
		{PayloadID, AddrID(netip.MustParseAddr("192.0.2.1"), 17, 1701).Append(nil)}})
	f.Add(uint8(PayloadSA), seed, true)
	del := Delete{DOI: DOIIPsec, Protocol: ProtoESP, SPIs: [][]byte{{9, 9, 9, 9}}}
	f.Add(uint8(PayloadDelete), appendPayloads(nil, []Payload{{PayloadDelete, del.Append(nil)}}), false)
	n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyRUThere, Data: []byte{0, 0, 0, 1}}
	f.Add(uint8(PayloadNotify), appendPayloads(nil, []Payload{{PayloadNotify, n.Append(nil)}}), false)
	f.Fuzz(func(t *testing.T, first uint8, rest []byte, quick bool) {
		p := newSyncPair(t)
		p.eb.mu.Lock()
		var s *ikeSA
		for _, x := range p.eb.sas {
			s = x
		}
		if s == nil || s.state != p1Established {
			p.eb.mu.Unlock()
			t.Fatal("pair not established")
		}
		mid := uint32(0x01020304)
		ex := ExchangeInformational
		if quick {
			ex = ExchangeQuickMode
		}
		h := prf(s.prop.Hash, s.keys.a, binary.BigEndian.AppendUint32(nil, mid), rest)
		plain := append([]byte{first, 0, 0, byte(genericHeaderLen + len(h))}, h...)
		plain = append(plain, rest...)
		iv := phase2IV(s.prop.Hash, s.iv, mid)
		ct := encrypt(s.blk, iv, plain)
		hdr := s.header(ex, mid, FlagEncryption)
		hdr.Next = PayloadHash
		msg := append(appendHeader(nil, hdr, HeaderLen+len(ct)), ct...)
		local, remote := s.local, s.remote
		p.eb.mu.Unlock()
		p.eb.Input(msg, local, remote, true)
		p.drain()
		p.ea.Tick()
		p.eb.Tick()
	})
}
