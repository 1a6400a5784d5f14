package ike

import (
	"fmt"
	"net/netip"
)

// Example wires an initiator (the edge bridge) and a responder (the
// gateway) back to back. In production each Engine's Sender is the ESP
// transport that owns UDP 500/4500 and calls Input for IKE datagrams, and
// OnEvent installs and removes ESP SAs.
func Example() {
	var q []queued
	var bridge, gateway *Engine
	onEvent := func(who string) func(Event) {
		return func(ev Event) {
			switch ev.Kind {
			case EventChildUp:
				fmt.Printf("%s: install %s, encap %v, %d+%d bytes of KEYMAT\n", who, ev.Child.Suite, ev.Child.Encap, len(ev.Child.InKey), len(ev.Child.OutKey))
			case EventIKEUp:
				fmt.Printf("%s: phase 1 up\n", who)
			}
		}
	}
	gwPSK := func(netip.Addr) ([]byte, bool) { return []byte("site-17 secret"), true }
	bridge, _ = New(Config{Sender: queueSender{q: &q, peer: &gateway}, PSK: gwPSK, OnEvent: onEvent("bridge"),
		ESPProposals: MustESPProposals("aes128gcm16")})
	// CryptoWorkers -1: the responder's Diffie-Hellman runs inline, so the
	// loop below sees every answer (a real gateway leaves the default and
	// answers MM3/MM5 from its worker pool, off the engine's lock).
	gateway, _ = New(Config{Sender: queueSender{q: &q, peer: &bridge}, PSK: gwPSK, OnEvent: onEvent("gateway"), CryptoWorkers: -1})
	_ = bridge.Dial(netip.MustParseAddrPort("10.0.0.2:500"), netip.MustParseAddrPort("192.0.2.1:500"))
	for len(q) > 0 { // deliver datagrams until both are quiet
		m := q[0]
		q = q[1:]
		m.to.Input(m.b, m.local, m.remote, m.natt)
	}
	// Output:
	// gateway: phase 1 up
	// bridge: phase 1 up
	// bridge: install aes128gcm16, encap true, 20+20 bytes of KEYMAT
	// gateway: install aes128gcm16, encap true, 20+20 bytes of KEYMAT
}
