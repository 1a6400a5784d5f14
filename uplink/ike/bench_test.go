package ike

import (
	"crypto/rand"
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// queueSender delivers synchronously through a shared queue, so a
// benchmark can run a whole handshake on one goroutine.
type queueSender struct {
	q    *[]queued
	peer **Engine
}

type queued struct {
	to            *Engine
	b             []byte
	local, remote netip.AddrPort
	natt          bool
}

func (s queueSender) SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	// The receiver sees our local address as its remote and vice versa.
	*s.q = append(*s.q, queued{to: *s.peer, b: b, local: remote, remote: local, natt: natt})
	return nil
}

// BenchmarkHandshake measures a complete Main Mode (PSK) + Quick Mode
// between two in-memory engines, both ends' work included; handshakes per
// second = 1e9 / (ns/op).
func BenchmarkHandshake(b *testing.B) {
	for _, tc := range []struct{ name, ike string }{
		{"ecp256", "aes128-sha256-ecp256"},
		{"modp2048", "aes256-sha256-modp2048"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			clk := stacktest.NewClock()
			for i := 0; i < b.N; i++ {
				var q []queued
				var ea, eb *Engine
				up := 0
				cfg := func(s queueSender) Config {
					return Config{Sender: s, Clock: clk, PSK: psk("bench"), CryptoWorkers: -1, IKEProposals: MustProposals(tc.ike),
						ESPProposals: MustESPProposals("aes128gcm16"), OnEvent: func(ev Event) {
							if ev.Kind == EventChildUp {
								up++
							}
						}}
				}
				ea, _ = New(cfg(queueSender{q: &q, peer: &eb}))
				eb, _ = New(cfg(queueSender{q: &q, peer: &ea}))
				if err := ea.Dial(netip.MustParseAddrPort("10.0.0.2:500"), netip.MustParseAddrPort("192.0.2.1:500")); err != nil {
					b.Fatal(err)
				}
				for len(q) > 0 {
					m := q[0]
					q = q[1:]
					m.to.Input(m.b, m.local, m.remote, m.natt)
				}
				if up != 2 {
					b.Fatalf("handshake did not complete: %d child-up events", up)
				}
			}
		})
	}
}

// BenchmarkDH is one side's DH work (key generation + shared secret), for
// comparison with BenchmarkHandshake, which does it twice per handshake.
func BenchmarkDH(b *testing.B) {
	for _, g := range []Group{GroupECP256, GroupMODP2048} {
		b.Run(g.String(), func(b *testing.B) {
			peer, _ := newDH(g, rand.Reader)
			for i := 0; i < b.N; i++ {
				k, err := newDH(g, rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := k.shared(peer.pub); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
