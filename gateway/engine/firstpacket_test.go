package engine_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// firstPacketSetups is how many set-ups TestFirstPacketAtIPCPUp runs: the
// window it guards (client up, gateway not yet registered) is a few
// microseconds to a millisecond wide, so one set-up proves little.
const firstPacketSetups = 50

// TestFirstPacketAtIPCPUp: a client sends its first datagram the moment
// its IPCP opens, before the gateway's OnSession has run. Every datagram
// the session's PPP delivers reaches the router (none is lost on the link
// before a handler is set) and none of the answers is dropped for want of
// a route, over many set-ups; they are answered. (Without the inbox, 11 of
// 50 were lost here.) Each answer is waited for as an event, however slow
// the machine: a datagram counts as lost only when a drop counter says so
// (waitAnswer), never because a timer ran out.
func TestFirstPacketAtIPCPUp(t *testing.T) {
	var ids strings.Builder
	for i := range firstPacketSetups {
		fmt.Fprintf(&ids, "  - {name: fp%d, ppp: {password: pw}, policy: sensors}\n", i)
	}
	// Every client dials from 127.0.0.1: lift the per-source pacing.
	ids.WriteString("pacing: {per_source_rate: 1000, per_source_burst: 1000, global_rate: 1000, global_burst: 1000}\n")
	g := startGateway(t, parseConfig(t, ids.String()), engine.Config{RatePerSource: 1000, BurstPerSource: 1000})
	g.udpEcho(t, netip.AddrPortFrom(central, 7))
	env := g.srv.Env()
	st := &g.srv.Router().Stats
	lost := 0
	for i := range firstPacketSetups {
		// No Close: the gateway's shutdown (Delete) ends every client.
		tn, got := dialNoClose(t, g.clientConfig(fmt.Sprintf("fp%d", i), "pw"))
		payload := fmt.Appendf(nil, "first datagram %d", i)
		if err := tn.WritePacket(pkttest.UDP(netip.AddrPortFrom(tn.LocalAddr(), 40000), netip.AddrPortFrom(central, 7), payload)); err != nil {
			t.Fatalf("set-up %d: write at IPCP up: %v", i, err)
		}
		p, ok := waitAnswer(t, got, func() uint64 { return firstPacketLosses(g, tn) })
		if !ok {
			lost++
			continue
		}
		if h := header.IPv4(p); pkttest.Src(h) != central || string(h.Payload()[8:]) != string(payload) {
			t.Errorf("set-up %d: unexpected answer %v -> %v", i, pkttest.Src(h), pkttest.Dst(h))
		}
	}
	if n := env.Sessions.Len(); n != firstPacketSetups {
		t.Errorf("%d sessions registered, want %d", n, firstPacketSetups)
	}
	es := g.eng.Stats()
	ts := g.eng.Tunnel().Stats()
	pppIn, pppDropped := ts.PPP.PacketsIn.Load(), ts.PPP.PacketsDropped.Load()
	t.Logf("%d set-ups: %d first datagrams unanswered; %d held until registration; gateway PPP delivered %d, dropped %d (early queued %d); router from sessions %d, drops no_route %d, spoofed %d",
		firstPacketSetups, lost, es.HeldPackets.Load(), pppIn, pppDropped, ts.PPP.EarlyIPv4Queued.Load(),
		st.FromSessionPackets.Load(), st.Drops(dataplane.ReasonNoRoute), st.Drops(dataplane.ReasonSpoofed))
	// The gateway's part: every packet the session's PPP delivered reached
	// the router (without the inbox, 11 of 50 were lost in that handoff).
	if n := st.FromSessionPackets.Load(); n != pppIn {
		t.Errorf("PPP delivered %d packets but the router saw %d: lost between the link and the router", pppIn, n)
	}
	// Below the gateway, PPP holds an IPv4 frame that reaches it ahead of
	// the Configure-Ack that opens its IPCP (EarlyIPv4Queued) instead of
	// dropping it: nothing may be lost anywhere.
	if lost > 0 || pppDropped > 0 {
		t.Errorf("%d of %d first datagrams sent at IPCP up got no answer; PPP dropped %d (esp unknown SPI %d, queue drops %d, no SA %d; l2tp data dropped %d)",
			lost, firstPacketSetups, pppDropped, ts.Transport.UnknownSPI.Load(), ts.Transport.QueueDrops.Load(), ts.Transport.NoSA.Load(), ts.L2TP.DataDropped.Load())
	}
	if n := st.Drops(dataplane.ReasonNoRoute); n != 0 {
		t.Errorf("%d answers dropped with no route to the session", n)
	}
	if n := es.HeldDropped.Load(); n != 0 {
		t.Errorf("%d early packets dropped", n)
	}
}

// firstPacketLosses sums the counters that record a data datagram (or its
// answer) dropped: PPP and L2TP data on both ends, the gateway's early
// inbox and router. (ESP's unknown-SPI and queue drops are left out: a
// retransmitted control packet can land there without any data lost.)
func firstPacketLosses(g *gateway, tn *l2tpipsec.Tunnel) uint64 {
	var n uint64
	for _, ts := range []*l2tpipsec.Stats{g.eng.Tunnel().Stats(), tn.Stats()} {
		n += ts.PPP.PacketsDropped.Load() + ts.L2TP.DataDropped.Load()
	}
	st := &g.srv.Router().Stats
	return n + g.eng.Stats().HeldDropped.Load() + st.Drops(dataplane.ReasonNoRoute) + st.Drops(dataplane.ReasonSpoofed)
}

// waitAnswer waits for the answer on got, however long a loaded machine
// takes, unless a loss counter moves (then the datagram or its answer was
// dropped: false, and the test's counter checks say where). Nothing here
// depends on the machine's speed: the only deadline is a hang guard.
func waitAnswer(t *testing.T, got <-chan []byte, losses func() uint64) ([]byte, bool) {
	t.Helper()
	base := losses()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	hang := time.NewTimer(2 * time.Minute)
	defer hang.Stop()
	for {
		select {
		case p := <-got:
			return p, true
		case <-tick.C:
			if losses() != base {
				// A drop was counted: the answer may still be in flight
				// (a dropped duplicate), so take it if it is there.
				select {
				case p := <-got:
					return p, true
				default:
					return nil, false
				}
			}
		case <-hang.C:
			t.Fatalf("no answer and no loss counted in 2 minutes: a datagram vanished without a counter")
			return nil, false
		}
	}
}
