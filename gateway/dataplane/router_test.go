package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/dhcpinform"
)

const testConfig = `
psk: {shared: x}
policies:
  sensors:
    allow:
      - {dst: 10.20.0.10/32, proto: tcp, ports: [1883]}
      - {dst: 10.10.9.0/24, proto: udp, ports: [5683]}
identities:
  - {name: hall7, ppp: {password: p}, policy: sensors, routes: [10.10.8.0/24]}
  - {name: pump2, ppp: {password: p}, policy: sensors, routes: [10.10.9.0/24]}
`

type fixture struct {
	r           *Router
	host        *fakeHost
	hall7, pump *fakeSession
	clock       *stacktest.Clock
}

func newFixture(t *testing.T, s2s bool) *fixture {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	tb := route.NewTable()
	f := &fixture{host: &fakeHost{mtu: 1500}, clock: stacktest.NewClock(),
		hall7: &fakeSession{id: 1, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"), routes: []netip.Prefix{netip.MustParsePrefix("10.10.8.0/24")}, mtu: 1400},
		pump:  &fakeSession{id: 2, ident: "pump2", addr: netip.MustParseAddr("10.10.0.9"), routes: []netip.Prefix{netip.MustParsePrefix("10.10.9.0/24")}, mtu: 1398}}
	for _, s := range []*fakeSession{f.hall7, f.pump} {
		if _, err := tb.Add(s, true); err != nil {
			t.Fatal(err)
		}
	}
	gw := netip.MustParseAddr("10.10.0.1")
	f.r = New(Config{Sessions: tb, Policies: policy.Compile(c), LocalAddr: gw, SessionToSession: s2s, Clock: f.clock,
		Local: func(s Session, p []byte) bool {
			reply, ok, _ := dhcpinform.Respond(p, dhcpinform.Reply{ServerID: gw,
				Routes: []dhcpinform.Route{{Prefix: netip.MustParsePrefix("10.20.0.0/16"), Gateway: gw}}})
			if ok {
				_ = s.WritePacket(reply)
			}
			return ok
		}})
	f.r.SetHost(f.host)
	return f
}

func TestFromSessionPolicyAndCounters(t *testing.T) {
	f := newFixture(t, false)
	tests := []struct {
		name   string
		pkt    []byte
		reason Reason // numReasons = forwarded to host
	}{
		{"allowed mqtt from session address", pkt(t, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 40000, 1883, 60, true), numReasons},
		{"allowed from framed route endpoint", pkt(t, header.TCPProtocolNumber, "10.10.8.17", "10.20.0.10", 40000, 1883, 60, true), numReasons},
		{"denied port", pkt(t, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 40000, 22, 60, true), ReasonPolicy},
		{"denied destination", pkt(t, header.UDPProtocolNumber, "10.10.0.7", "10.30.0.1", 40000, 53, 60, false), ReasonPolicy},
		{"spoofed source", pkt(t, header.TCPProtocolNumber, "10.10.9.5", "10.20.0.10", 40000, 1883, 60, true), ReasonSpoofed},
		{"truncated", pkt(t, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 40000, 1883, 60, true)[:30], ReasonMalformed},
		{"ipv6 from the unspecified address", append([]byte{0x60}, make([]byte, 39)...), ReasonMalformed6},
		{"ip version 5", append([]byte{0x50}, make([]byte, 39)...), ReasonNotIPv4},
		{"session to session off", pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.10.9.5", 40000, 5683, 60, false), ReasonSessionToSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeHost := len(f.host.packets())
			beforeDrop := uint64(0)
			if tt.reason < numReasons {
				beforeDrop = f.r.Stats.Drops(tt.reason)
			}
			err := f.r.FromSession(f.hall7, tt.pkt)
			if tt.reason == numReasons {
				if err != nil {
					t.Fatalf("got %v, want forwarded", err)
				}
				got := f.host.packets()
				if len(got) != beforeHost+1 {
					t.Fatalf("host got %d packets, want %d", len(got), beforeHost+1)
				}
				if ttl := header.IPv4(got[len(got)-1]).TTL(); ttl != 63 {
					t.Errorf("TTL: got %d, want 63", ttl)
				}
				if checksum.Checksum(got[len(got)-1][:20], 0) != 0xffff {
					t.Error("IP checksum wrong after TTL decrement")
				}
				return
			}
			if err == nil {
				t.Fatalf("got forwarded, want drop %v", tt.reason)
			}
			if got := f.r.Stats.Drops(tt.reason); got != beforeDrop+1 {
				t.Errorf("drops[%v]: got %d, want %d", tt.reason, got, beforeDrop+1)
			}
			if len(f.host.packets()) != beforeHost {
				t.Error("dropped packet reached the host")
			}
		})
	}
	c := f.r.Identity("hall7")
	if c.RxPackets.Load() != 6 { // valid IPv4 packets only
		t.Errorf("hall7 rx packets: got %d, want 6", c.RxPackets.Load())
	}
}

func TestSessionToSessionNeedsPolicy(t *testing.T) {
	f := newFixture(t, true)
	ok := pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.10.9.5", 40000, 5683, 60, false)
	if err := f.r.FromSession(f.hall7, ok); err != nil {
		t.Fatalf("allowed session-to-session: %v", err)
	}
	if got := f.pump.packets(); len(got) != 1 || dst4(header.IPv4(got[0])) != netip.MustParseAddr("10.10.9.5") {
		t.Fatalf("pump2 got %d packets, want the one for 10.10.9.5", len(got))
	}
	denied := pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.10.9.5", 40000, 22, 60, false)
	if err := f.r.FromSession(f.hall7, denied); err == nil || f.r.Stats.Drops(ReasonPolicy) != 1 {
		t.Errorf("denied session-to-session: err %v, policy drops %d", err, f.r.Stats.Drops(ReasonPolicy))
	}
}

func TestFromHostLPMAndReplyFlows(t *testing.T) {
	f := newFixture(t, false)
	// Central CoAP client polls sensor 10.10.8.17 (inside hall7's framed
	// route) from an ephemeral port.
	req := pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.8.17", 50123, 5683, 60, false)
	if err := f.r.FromHost(req); err != nil {
		t.Fatal(err)
	}
	if got := f.hall7.packets(); len(got) != 1 {
		t.Fatalf("hall7 got %d packets, want 1", len(got))
	}
	// The reply is not in hall7's allow-list, but answers a flow.
	reply := pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.20.0.20", 5683, 50123, 60, false)
	if err := f.r.FromSession(f.hall7, reply); err != nil {
		t.Fatalf("reply to a central flow: %v", err)
	}
	// An unsolicited packet to the same host is still denied.
	other := pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.20.0.20", 5683, 50124, 60, false)
	if err := f.r.FromSession(f.hall7, other); err == nil {
		t.Error("unsolicited packet passed")
	}
	// After the idle timeout the flow is gone.
	f.clock.Advance(flowIdle + 1)
	if err := f.r.FromSession(f.hall7, pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.20.0.20", 5683, 50123, 60, false)); err == nil {
		t.Error("reply after flow expiry passed")
	}
	// Ping from central gets its echo reply through.
	echo := pkt(t, header.ICMPv4ProtocolNumber, "10.20.0.20", "10.10.0.7", 8, 77, 60, false)
	if err := f.r.FromHost(echo); err != nil {
		t.Fatal(err)
	}
	if err := f.r.FromSession(f.hall7, pkt(t, header.ICMPv4ProtocolNumber, "10.10.0.7", "10.20.0.20", 0, 77, 60, false)); err != nil {
		t.Errorf("echo reply: %v", err)
	}
	if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.77.1", 1, 2, 60, false)); err == nil || f.r.Stats.Drops(ReasonNoRoute) != 1 {
		t.Error("packet without a session not dropped as no_route")
	}
	if got := f.r.Identity("hall7").TxPackets.Load(); got != 2 {
		t.Errorf("hall7 tx packets: got %d, want 2", got)
	}
}

func TestFragNeededAndMSS(t *testing.T) {
	f := newFixture(t, false)
	big := pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.9.5", 5683, 5683, 1450, true)
	if err := f.r.FromHost(big); err == nil {
		t.Fatal("oversize DF packet forwarded")
	}
	hp := f.host.packets()
	if len(hp) != 1 {
		t.Fatalf("host got %d ICMP packets, want 1", len(hp))
	}
	icmp := header.IPv4(hp[0])
	pl := icmp.Payload()
	if icmp.TransportProtocol() != header.ICMPv4ProtocolNumber || pl[0] != 3 || pl[1] != 4 || binary.BigEndian.Uint16(pl[6:]) != 1398 || dst4(icmp) != netip.MustParseAddr("10.20.0.20") {
		t.Errorf("ICMP: proto %d type %d code %d mtu %d dst %v; want 3/4 mtu 1398 to 10.20.0.20", icmp.Protocol(), pl[0], pl[1], binary.BigEndian.Uint16(pl[6:]), dst4(icmp))
	}
	if checksum.Checksum(pl, 0) != 0xffff {
		t.Error("ICMP checksum wrong")
	}
	// Its source is the session's address, not the gateway's own VPN
	// address: the host holds that one on its TUN and would drop an ICMP
	// from it as a martian (path-MTU discovery from the gateway host).
	if src4(icmp) != f.pump.Addr() || src4(icmp) == f.r.cfg.LocalAddr {
		t.Errorf("ICMP to the host from %v, want the session's address %v", src4(icmp), f.pump.Addr())
	}
	// Without DF the packet is fragmented to the session MTU.
	if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.9.5", 5683, 5683, 1450, false)); err != nil {
		t.Fatal(err)
	}
	if got := f.pump.packets(); len(got) != 2 || len(got[0]) > 1398 {
		t.Errorf("fragmentation: got %d packets", len(got))
	}
	// A SYN from central to hall7 is clamped to hall7's MTU.
	syn := tcpSYN(t, "10.20.0.10", "10.10.0.7", 1460, nil)
	if err := f.r.FromHost(syn); err != nil {
		t.Fatal(err)
	}
	got := f.hall7.packets()
	if mss := mssOf(got[len(got)-1]); mss != 1360 || !tcpChecksumOK(got[len(got)-1]) {
		t.Errorf("clamped MSS to session: got %d, want 1360 (checksum ok %v)", mss, tcpChecksumOK(got[len(got)-1]))
	}
	// And a SYN from hall7 towards central too.
	if err := f.r.FromSession(f.hall7, tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, nil)); err != nil {
		t.Fatal(err)
	}
	hp = f.host.packets()
	if mss := mssOf(hp[len(hp)-1]); mss != 1360 {
		t.Errorf("clamped MSS from session: got %d, want 1360", mss)
	}
	if f.r.Stats.MSSClamped.Load() != 2 {
		t.Errorf("MSSClamped: got %d, want 2", f.r.Stats.MSSClamped.Load())
	}
}

func TestLocalDHCPInform(t *testing.T) {
	f := newFixture(t, false)
	// Minimal DHCPINFORM from hall7 to the limited broadcast address.
	m := make([]byte, 240)
	m[0], m[1], m[2] = 1, 1, 6
	copy(m[12:16], []byte{10, 10, 0, 7})
	binary.BigEndian.PutUint32(m[236:], 0x63825363)
	m = append(m, 53, 1, 8, 255)
	p := pkttest.UDP(netip.MustParseAddrPort("10.10.0.7:68"), netip.MustParseAddrPort("255.255.255.255:67"), m)
	if err := f.r.FromSession(f.hall7, p); err != nil {
		t.Fatal(err)
	}
	got := f.hall7.packets()
	if len(got) != 1 || dst4(header.IPv4(got[0])) != netip.MustParseAddr("10.10.0.7") || f.r.Stats.LocalHandled.Load() != 1 {
		t.Fatalf("DHCPACK not sent back to the session: %d packets", len(got))
	}
	if len(f.host.packets()) != 0 {
		t.Error("DHCPINFORM leaked to the host")
	}
}

// TestReplyToGatewayAddressGoesToHost: the host holds the gateway's VPN
// address (TUN); a session's reply to it must reach the host, not be
// swallowed as "local".
func TestReplyToGatewayAddressGoesToHost(t *testing.T) {
	f := newFixture(t, false)
	if err := f.r.FromHost(pkt(t, header.ICMPv4ProtocolNumber, "10.10.0.1", "10.10.0.7", 8, 99, 28, false)); err != nil {
		t.Fatal(err)
	}
	if err := f.r.FromSession(f.hall7, pkt(t, header.ICMPv4ProtocolNumber, "10.10.0.7", "10.10.0.1", 0, 99, 28, false)); err != nil {
		t.Fatalf("echo reply to the gateway address: %v", err)
	}
	if got := f.host.packets(); len(got) != 1 || dst4(header.IPv4(got[0])) != netip.MustParseAddr("10.10.0.1") {
		t.Errorf("host got %d packets, want the echo reply", len(got))
	}
	// Broadcasts that are not DHCPINFORM stay local and are dropped.
	if err := f.r.FromSession(f.hall7, pkt(t, header.UDPProtocolNumber, "10.10.0.7", "255.255.255.255", 137, 137, 60, false)); err == nil || f.r.Stats.Drops(ReasonLocal) != 1 {
		t.Errorf("broadcast: err %v, local drops %d", err, f.r.Stats.Drops(ReasonLocal))
	}
}

// TestFlowRenewal: a host stream notes its flow on every packet; within
// flowRenew the entry is not rewritten, after it the expiry moves on, so
// a flow that keeps sending never expires and one that stops does after
// flowIdle (at most flowRenew early).
func TestFlowRenewal(t *testing.T) {
	f := newFixture(t, false)
	req := func() {
		t.Helper()
		if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.8.17", 50123, 5683, 60, false)); err != nil {
			t.Fatal(err)
		}
	}
	reply := func() error {
		return f.r.FromSession(f.hall7, pkt(t, header.UDPProtocolNumber, "10.10.8.17", "10.20.0.20", 5683, 50123, 60, false))
	}
	req()
	f.clock.Advance(flowRenew / 2)
	req() // cached: expiry stays at the first note + flowIdle
	f.clock.Advance(flowRenew)
	req() // renewed: expiry now + flowIdle
	f.clock.Advance(flowIdle - flowRenew/2)
	if err := reply(); err != nil {
		t.Fatalf("reply within flowIdle of the last renewal: %v", err)
	}
	// The reply renewed it too; stop sending and let it expire.
	f.clock.Advance(flowIdle + 1)
	if err := reply(); err == nil {
		t.Fatal("reply after the flow went idle passed")
	}
	// Noted again after expiry (the cache must not claim it is there).
	req()
	if err := reply(); err != nil {
		t.Fatalf("reply after the flow was noted again: %v", err)
	}
}

// burstHost hands out reads: each a group of packets one read returned;
// Buffered is what is left of the current group.
type burstHost struct {
	fakeHost
	reads [][][]byte
	left  [][]byte
}

func (h *burstHost) ReadPacket(buf []byte) (int, error) {
	if len(h.left) == 0 {
		if len(h.reads) == 0 {
			return 0, os.ErrClosed
		}
		h.left, h.reads = h.reads[0], h.reads[1:]
	}
	n := copy(buf, h.left[0])
	h.left = h.left[1:]
	return n, nil
}

func (h *burstHost) Buffered() int { return len(h.left) }

// countingBurster records how many packets hall7 had at each Hold and
// Release.
type countingBurster struct {
	s     *fakeSession
	holds []int
	rels  []int
}

func (b *countingBurster) Hold()    { b.holds = append(b.holds, len(b.s.packets())) }
func (b *countingBurster) Release() { b.rels = append(b.rels, len(b.s.packets())) }

// TestRunHostHoldsBursts: RunHost holds the Burster around a read that
// carried several packets (from before its first packet to after its
// last), and not around a read of one.
func TestRunHostHoldsBursts(t *testing.T) {
	f := newFixture(t, false)
	p := func(port uint16) []byte {
		return pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.8.17", port, 5683, 60, false)
	}
	h := &burstHost{fakeHost: fakeHost{mtu: 1500}, reads: [][][]byte{{p(1)}, {p(2), p(3), p(4)}, {p(5)}}}
	b := &countingBurster{s: f.hall7}
	f.r.SetHost(h)
	f.r.SetBurster(b)
	if err := f.r.RunHost(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("RunHost: %v", err)
	}
	if got := len(f.hall7.packets()); got != 5 {
		t.Fatalf("hall7 got %d packets, want 5", got)
	}
	if !slices.Equal(b.holds, []int{1}) || !slices.Equal(b.rels, []int{4}) {
		t.Errorf("holds at %v, releases at %v (packets delivered); want [1] and [4]", b.holds, b.rels)
	}
}

// countedSession carries its own counters (CountedSession).
type countedSession struct {
	*fakeSession
	c *Counters
}

func (s countedSession) IdentityCounters() *Counters { return s.c }

// TestCountedSession: the router counts a CountedSession's traffic on the
// counters it carries (no look-up by name), both directions.
func TestCountedSession(t *testing.T) {
	f := newFixture(t, false)
	tb := route.NewTable()
	cs := countedSession{&fakeSession{id: 9, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"), mtu: 1400}, new(Counters)}
	if _, err := tb.Add(cs, true); err != nil {
		t.Fatal(err)
	}
	f.r.cfg.Sessions = tb
	if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.0.7", 50123, 5683, 100, false)); err != nil {
		t.Fatal(err)
	}
	if err := f.r.FromSession(cs, pkt(t, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 40000, 1883, 80, false)); err != nil {
		t.Fatal(err)
	}
	if c := cs.c; c.TxPackets.Load() != 1 || c.TxBytes.Load() != 100 || c.RxPackets.Load() != 1 || c.RxBytes.Load() != 80 {
		t.Errorf("carried counters: tx %d/%d rx %d/%d; want 1/100 1/80", c.TxPackets.Load(), c.TxBytes.Load(), c.RxPackets.Load(), c.RxBytes.Load())
	}
	if n := f.r.Identity("hall7").TxPackets.Load() + f.r.Identity("hall7").RxPackets.Load(); n != 0 {
		t.Errorf("the name's counters moved too (%d packets): looked up per packet", n)
	}
}
