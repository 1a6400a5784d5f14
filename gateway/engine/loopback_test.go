package engine_test

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

var (
	central = netip.MustParseAddr("10.20.0.10")
	denied  = netip.MustParseAddr("10.20.0.11")
	pool    = netip.MustParsePrefix("10.10.0.0/24")
)

// TestLoopbackEndToEnd runs the daemon core with the engine in userspace
// data-plane mode on loopback sockets: the uplink client dials, gets a
// pool address, reaches an in-process central service by UDP and ICMP; a
// policy-denied destination is dropped and counted; a reload adds an
// identity without dropping the session; shutdown reaches the client as a
// Delete/StopCCN and the session is unregistered.
func TestLoopbackEndToEnd(t *testing.T) {
	stacktest.CheckGoroutines(t)
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	g.udpEcho(t, netip.AddrPortFrom(central, 7))

	tn, got := dial(t, g.clientConfig("hall7", "pw7"))
	me := tn.LocalAddr()
	if !pool.Contains(me) || me == pool.Addr().Next() {
		t.Fatalf("client address %v, want one from the pool %v (not the gateway's)", me, pool)
	}
	env := g.srv.Env()
	// OnSession runs on its own goroutine once IPCP opened: the client may
	// be up a moment before the gateway registered it.
	waitFor(t, "hall7 registered", func() bool { s := env.Sessions.Lookup(me); return s != nil && s.Identity() == "hall7" })

	// UDP to the in-process service and back.
	payload := []byte("hello central")
	if err := tn.WritePacket(pkttest.UDP(netip.AddrPortFrom(me, 40000), netip.AddrPortFrom(central, 7), payload)); err != nil {
		t.Fatal(err)
	}
	h := await(t, got, "UDP echo", func(h header.IPv4) bool { return h.TransportProtocol() == header.UDPProtocolNumber })
	if pkttest.Src(h) != central || pkttest.Dst(h) != me || !bytes.Equal(h.Payload()[8:], payload) {
		t.Fatalf("echo: got %v -> %v %q, want %v -> %v %q", pkttest.Src(h), pkttest.Dst(h), h.Payload()[8:], central, me, payload)
	}
	// ICMP echo.
	if err := tn.WritePacket(pkttest.ICMPEcho(me, central, 7, 1, "pingpong")); err != nil {
		t.Fatal(err)
	}
	h = await(t, got, "ICMP echo reply", func(h header.IPv4) bool { return h.TransportProtocol() == header.ICMPv4ProtocolNumber })
	if pkttest.Src(h) != central || h.Payload()[0] != 0 {
		t.Fatalf("ICMP: got type %d from %v, want echo reply (0) from %v", h.Payload()[0], pkttest.Src(h), central)
	}

	// Policy: 10.20.0.11 is not in hall7's allow-list.
	before := g.srv.Router().Stats.Drops(dataplane.ReasonPolicy)
	if err := tn.WritePacket(pkttest.UDP(netip.AddrPortFrom(me, 40000), netip.AddrPortFrom(denied, 7), payload)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "policy drop counted", func() bool { return g.srv.Router().Stats.Drops(dataplane.ReasonPolicy) == before+1 })

	// Reload adds pump2; hall7's session stays.
	changes, err := g.srv.Reload(parseConfig(t, "  - {name: pump2, ppp: {password: pw2}, policy: sensors}\n"))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Logf("reload: %+v", changes)
	tn2, got2 := dial(t, g.clientConfig("pump2", "pw2"))
	waitFor(t, "pump2 registered", func() bool { return env.Sessions.Len() == 2 })
	if tn2.LocalAddr() == me {
		t.Fatalf("pump2 got hall7's address %v", me)
	}
	// Both set-ups timed from their first Main Mode message to IPCP up,
	// and the whole exposition passes promtool.
	expo := g.scrape(t)
	if !strings.Contains(expo, "fleetgate_session_setup_duration_seconds_count 2\n") {
		t.Errorf("set-up histogram:\n%s", grepLines(expo, "setup_duration"))
	}
	promtoolCheck(t, expo)
	// Peer fingerprint: our own client stack is recognised (L2TP
	// Vendor-Name), in the sessions view and the bounded metrics label.
	if !strings.Contains(expo, `fleetgate_session_setups_by_peer_total{peer="fleetgate-bridge"} 2`+"\n") {
		t.Errorf("setups by peer:\n%s", grepLines(expo, "by_peer"))
	}
	for _, s := range g.srv.SessionsView().Sessions {
		if s.Peer != "fleetgate-bridge" {
			t.Errorf("session %d (%s): peer %q, want fleetgate-bridge", s.ID, s.Identity, s.Peer)
		}
	}
	select {
	case <-tn.Done():
		t.Fatalf("hall7's tunnel ended on reload: %v", tn.Err())
	default:
	}
	for i, c := range []struct {
		tn  *l2tpipsec.Tunnel
		got chan []byte
	}{{tn, got}, {tn2, got2}} {
		if err := c.tn.WritePacket(pkttest.UDP(netip.AddrPortFrom(c.tn.LocalAddr(), 40001), netip.AddrPortFrom(central, 7), payload)); err != nil {
			t.Fatal(err)
		}
		if h := await(t, c.got, "UDP echo after reload", func(h header.IPv4) bool { return h.TransportProtocol() == header.UDPProtocolNumber }); pkttest.Dst(h) != c.tn.LocalAddr() {
			t.Fatalf("client %d: echo to %v, want %v", i, pkttest.Dst(h), c.tn.LocalAddr())
		}
	}
	if n := env.Sessions.Len(); n != 2 {
		t.Fatalf("sessions: got %d, want 2", n)
	}

	// SIGTERM: both clients hear Delete/StopCCN at once (well before DPD
	// or LCP echo could notice), and the sessions are unregistered.
	g.stop()
	for _, c := range []*l2tpipsec.Tunnel{tn, tn2} {
		if err := doneWithin(c.Done(), 5*time.Second); err != nil {
			t.Fatalf("client %v not told of the shutdown within 5s", c.LocalAddr())
		}
		if err := c.Err(); err == nil || errors.Is(err, l2tpipsec.ErrClosed) {
			t.Fatalf("client end reason: got %v, want a peer-initiated teardown", err)
		}
		t.Logf("client %v ended: %v (phase %v)", c.LocalAddr(), c.Err(), l2tpipsec.PhaseOf(c.Err()))
	}
	if n := env.Sessions.Len(); n != 0 {
		t.Fatalf("sessions after shutdown: got %d, want 0", n)
	}
	if up, down := g.eng.Stats().SessionsUp.Load(), g.eng.Stats().SessionsDown.Load(); up != 2 || down != 2 {
		t.Fatalf("engine sessions up/down: got %d/%d, want 2/2", up, down)
	}
}

// TestReloginAndReload: a second login of the same identity replaces the
// first session (the old client is told and its Done fires), and a reload
// that changes an identity's settings ends that identity's session only.
func TestReloginAndReload(t *testing.T) {
	g := startGateway(t, parseConfig(t, "  - {name: pump2, ppp: {password: pw2}, policy: sensors}\n"), engine.Config{})
	env := g.srv.Env()
	old, _ := dial(t, g.clientConfig("hall7", "pw7"))
	other, _ := dial(t, g.clientConfig("pump2", "pw2"))
	waitFor(t, "two sessions", func() bool { return env.Sessions.Len() == 2 })
	first := env.Sessions.ByIdentity("hall7").ID()

	// The same PPP login from another box (another IKE identity, so IKE's
	// INITIAL-CONTACT does not already clear the old SAs): the session
	// table replaces the old session and the engine tears it down.
	cc := g.clientConfig("hall7", "pw7")
	cc.LocalIKE, cc.LocalNATT = "127.0.0.5:0", "127.0.0.5:0"
	cc.LocalID = &ike.Identification{Type: ike.IDFQDN, Data: []byte("hall7-spare.sites.example")}
	renewed, _ := dial(t, cc)
	if err := doneWithin(old.Done(), 10*time.Second); err != nil {
		t.Fatal("the replaced client was not told within 10s")
	}
	t.Logf("replaced client ended: %v", old.Err())
	waitFor(t, "hall7 re-registered", func() bool {
		s := env.Sessions.ByIdentity("hall7")
		return s != nil && s.ID() != first && s.Addr() == renewed.LocalAddr()
	})

	// Reload with pump2's password changed: pump2 goes, hall7 stays.
	if _, err := g.srv.Reload(parseConfig(t, "  - {name: pump2, ppp: {password: changed}, policy: sensors}\n")); err != nil {
		t.Fatal(err)
	}
	if err := doneWithin(other.Done(), 10*time.Second); err != nil {
		t.Fatal("pump2 was not terminated by the reload within 10s")
	}
	waitFor(t, "pump2 unregistered", func() bool { return env.Sessions.ByIdentity("pump2") == nil })
	select {
	case <-renewed.Done():
		t.Fatalf("hall7 ended on a reload that did not change it: %v", renewed.Err())
	default:
	}
	if env.Sessions.ByIdentity("hall7") == nil {
		t.Fatal("hall7 unregistered by an unrelated reload")
	}
}
