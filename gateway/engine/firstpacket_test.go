package engine_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

// firstPacketSetups is how many set-ups TestFirstPacketAtIPCPUp runs: the
// window it guards (client up, gateway not yet registered) is a few
// microseconds to a millisecond wide, so one set-up proves little.
const firstPacketSetups = 50

// TestFirstPacketAtIPCPUp: a client sends its first datagram the moment
// its IPCP opens, before the gateway's OnSession has run. Every one of
// those datagrams reaches the central service and is answered: none is
// lost on the gateway's link before a handler is set, none of the answers
// is dropped for want of a route, over many set-ups. (Without the inbox,
// 11 of 50 were lost here.)
func TestFirstPacketAtIPCPUp(t *testing.T) {
	var ids strings.Builder
	for i := range firstPacketSetups {
		fmt.Fprintf(&ids, "  - {name: fp%d, ppp: {password: pw}, policy: sensors}\n", i)
	}
	// Every client dials from 127.0.0.1: lift the per-source pacing.
	ids.WriteString("pacing: {per_source_rate: 1000, per_source_burst: 1000, global_rate: 1000, global_burst: 1000}\n")
	g := startGateway(t, parseConfig(t, ids.String()), engine.Config{RatePerSource: 1000, BurstPerSource: 1000})
	us, ok := g.srv.Host().(*dataplane.Userspace)
	if !ok {
		t.Fatalf("host is %T, want *dataplane.Userspace", g.srv.Host())
	}
	echo, err := us.Stack().ListenUDP(netip.AddrPortFrom(central, 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	env := g.srv.Env()
	st := &g.srv.Router().Stats
	lost := 0
	for i := range firstPacketSetups {
		// No Close: the gateway's shutdown (Delete) ends every client.
		tn, got := dialNoClose(t, g.clientConfig(fmt.Sprintf("fp%d", i), "pw"))
		payload := fmt.Appendf(nil, "first datagram %d", i)
		if err := tn.WritePacket(udpPacket(tn.LocalAddr(), central, 40000, 7, payload)); err != nil {
			t.Fatalf("set-up %d: write at IPCP up: %v", i, err)
		}
		select {
		case p := <-got:
			if h := ipv4.Header(p); h.Src() != central || string(h.Payload()[8:]) != string(payload) {
				t.Errorf("set-up %d: unexpected answer %v -> %v", i, h.Src(), h.Dst())
			}
		case <-time.After(3 * time.Second):
			lost++
		}
	}
	if n := env.Sessions.Len(); n != firstPacketSetups {
		t.Errorf("%d sessions registered, want %d", n, firstPacketSetups)
	}
	es := g.eng.Stats()
	t.Logf("%d set-ups: %d first datagrams lost; %d held until registration; router drops no_route %d, spoofed %d",
		firstPacketSetups, lost, es.HeldPackets.Load(), st.Drops(dataplane.ReasonNoRoute), st.Drops(dataplane.ReasonSpoofed))
	if lost != 0 {
		t.Errorf("%d of %d first datagrams sent at IPCP up got no answer", lost, firstPacketSetups)
	}
	if n := st.FromSessionPackets.Load(); n != firstPacketSetups {
		t.Errorf("router saw %d packets from sessions, want %d", n, firstPacketSetups)
	}
	if n := st.Drops(dataplane.ReasonNoRoute); n != 0 {
		t.Errorf("%d answers dropped with no route to the session", n)
	}
	if n := es.HeldDropped.Load(); n != 0 {
		t.Errorf("%d early packets dropped", n)
	}
}
