package dataplane

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/ipv6"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
)

const testConfig6 = `
psk: {shared: x}
policies:
  v6:
    allow:
      - {proto: udp, ports: [5683]}
      - {proto: tcp, ports: [443]}
identities:
  - {name: site6, ppp: {password: p}, policy: v6, routes: [10.10.8.0/24], ipv6_prefix: "2001:db8:8::/64"}
`

type fakeSession6 struct {
	fakeSession
	pfx netip.Prefix
}

func (f *fakeSession6) IPv6Prefix() netip.Prefix { return f.pfx }

var (
	site6    = netip.MustParseAddr("2001:db8:8::17")
	central6 = netip.MustParseAddr("2001:db8:200::10")
)

// pkt6 builds an IPv6 packet: ext raw extension headers (byte 0 is their
// own type, fixed up into the chain), then proto with l4 (ports set for
// TCP/UDP, checksums valid), padded to n bytes of payload after l4.
func pkt6(src, dst netip.Addr, ext [][]byte, proto uint8, dport uint16, l4len int) []byte {
	p := make([]byte, header.IPv6MinimumSize)
	p[0], p[7] = 0x60, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	nh := 6
	for _, e := range ext {
		p[nh] = e[0]
		off := len(p)
		p = append(p, e...)
		nh = off
	}
	p[nh] = proto
	l4 := make([]byte, l4len)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], dport)
	if proto == ipv6.ProtoUDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
	}
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-header.IPv6MinimumSize))
	return p
}

func syn6(src, dst netip.Addr, mss uint16) []byte {
	p := pkt6(src, dst, nil, ipv6.ProtoTCP, 443, 24)
	t := p[header.IPv6MinimumSize:]
	t[12], t[13] = 6<<4, 0x02
	t[20], t[21] = 2, 4
	binary.BigEndian.PutUint16(t[22:], mss)
	binary.BigEndian.PutUint16(t[16:], ^checksum.Checksum(t, header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16()), uint16(len(t)))))
	return p
}

func newFixture6(t *testing.T, hostMTU int) (*Router, *fakeHost, *fakeSession6) {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(testConfig6))
	if err != nil {
		t.Fatal(err)
	}
	tb := route.NewTable()
	s := &fakeSession6{fakeSession: fakeSession{id: 1, ident: "site6", addr: netip.MustParseAddr("10.10.0.7"),
		routes: []netip.Prefix{netip.MustParsePrefix("10.10.8.0/24")}, mtu: 1394}, pfx: netip.MustParsePrefix("2001:db8:8::/64")}
	if _, err := tb.Add(s, true); err != nil {
		t.Fatal(err)
	}
	if tb.Lookup(site6) != s || tb.Lookup(netip.MustParseAddr("2001:db8:9::1")) != nil {
		t.Fatal("route table: IPv6 prefix not routed to its session")
	}
	r := New(Config{Sessions: tb, Policies: policy.Compile(c), LocalAddr: netip.MustParseAddr("10.10.0.1")})
	h := &fakeHost{mtu: hostMTU}
	r.SetHost(h)
	return r, h, s
}

// TestRouterIPv6FromSession: the site's allowed IPv6 traffic reaches the
// host with its hop limit decremented and TCP MSS clamped to the session
// MTU minus 60; spoofed, denied, link-local, malformed and fragmented
// packets are dropped, each counted under its own reason; a packet too big
// for the host link is answered with ICMPv6 Packet Too Big.
func TestRouterIPv6FromSession(t *testing.T) {
	r, host, s := newFixture6(t, 1500)
	if err := r.FromSession(s, pkt6(site6, central6, nil, ipv6.ProtoUDP, 5683, 20)); err != nil {
		t.Fatalf("allowed UDP: %v", err)
	}
	if err := r.FromSession(s, syn6(site6, central6, 1440)); err != nil {
		t.Fatalf("allowed TCP SYN: %v", err)
	}
	got := host.packets()
	if len(got) != 2 || got[0][7] != 63 {
		t.Fatalf("host got %d packets (hop limit %d)", len(got), got[0][7])
	}
	tcp := got[1][header.IPv6MinimumSize:]
	if mss := binary.BigEndian.Uint16(tcp[22:]); mss != 1394-60 || checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFrom16(site6.As16()), tcpip.AddrFrom16(central6.As16()), uint16(len(tcp)))) != 0xffff {
		t.Fatalf("MSS %d (want %d) or TCP checksum broken", mss, 1394-60)
	}
	hbh := []byte{ipv6.ProtoHopByHop, 0, 1, 4, 0, 0, 0, 0}
	frag := []byte{ipv6.ProtoFragment, 0, 0, 1, 0, 0, 0, 7}
	badExt := pkt6(site6, central6, [][]byte{{ipv6.ProtoDestOpts, 0, 1, 4, 0, 0, 0, 0}}, ipv6.ProtoUDP, 5683, 8)
	badExt[41] = 200 // extension header longer than the packet
	for _, tc := range []struct {
		name string
		p    []byte
		why  Reason
	}{
		{"spoofed", pkt6(netip.MustParseAddr("2001:db8:9::17"), central6, nil, ipv6.ProtoUDP, 5683, 8), ReasonSpoofed},
		{"denied port", pkt6(site6, central6, nil, ipv6.ProtoUDP, 53, 8), ReasonPolicy},
		{"link-local", pkt6(netip.MustParseAddr("fe80::2"), central6, nil, ipv6.ProtoUDP, 5683, 8), ReasonLocal},
		{"fragment", pkt6(site6, central6, [][]byte{frag}, ipv6.ProtoUDP, 5683, 8), ReasonFragment6},
		{"bad extension header", badExt, ReasonMalformed6},
		{"hop-by-hop not first", pkt6(site6, central6, [][]byte{{ipv6.ProtoDestOpts, 0, 1, 4, 0, 0, 0, 0}, hbh}, ipv6.ProtoUDP, 5683, 8), ReasonMalformed6},
		{"truncated", pkt6(site6, central6, nil, ipv6.ProtoUDP, 5683, 8)[:45], ReasonMalformed6},
	} {
		before := r.Stats.Drops(tc.why)
		if err := r.FromSession(s, tc.p); err != ErrDropped || r.Stats.Drops(tc.why) != before+1 {
			t.Errorf("%s: %v, %s drops %d -> %d", tc.name, err, tc.why, before, r.Stats.Drops(tc.why))
		}
	}
	if n := len(host.packets()); n != 2 {
		t.Fatalf("host got %d packets, want still 2", n)
	}
	// Too big for a 1280-byte host link: Packet Too Big back to the site.
	r2, _, s2 := newFixture6(t, 1280)
	if err := r2.FromSession(s2, pkt6(site6, central6, nil, ipv6.ProtoUDP, 5683, 1300)); err != ErrDropped || r2.Stats.Drops(ReasonTooBig) != 1 {
		t.Fatalf("too big: %v", err)
	}
	ptb := s2.packets()
	if len(ptb) != 1 {
		t.Fatalf("session got %d packets, want the Packet Too Big", len(ptb))
	}
	in, err := ipv6.Parse(ptb[0])
	if err != nil || in.Proto != ipv6.ProtoICMPv6 || ptb[0][in.L4] != ipv6.ICMPPacketTooBig || binary.BigEndian.Uint32(ptb[0][in.L4+4:]) != 1280 || ipv6.Dst(ptb[0]) != site6 {
		t.Fatalf("Packet Too Big: %+v %v", in, err)
	}
}

// TestRouterIPv6FromHost: central → site by the session's IPv6 prefix;
// a destination outside every prefix has no route; a packet larger than
// the session MTU is answered to the host with Packet Too Big from the
// site prefix's ::1 (not the gateway's link-local address, which the host
// cannot route).
func TestRouterIPv6FromHost(t *testing.T) {
	r, host, s := newFixture6(t, 1500)
	if err := r.FromHost(pkt6(central6, site6, nil, ipv6.ProtoUDP, 5683, 20)); err != nil {
		t.Fatal(err)
	}
	if got := s.packets(); len(got) != 1 || got[0][7] != 63 {
		t.Fatalf("session got %d packets", len(got))
	}
	if err := r.FromHost(pkt6(central6, netip.MustParseAddr("2001:db8:9::1"), nil, ipv6.ProtoUDP, 5683, 20)); err != ErrDropped || r.Stats.Drops(ReasonNoRoute) != 1 {
		t.Fatalf("no route: %v", err)
	}
	if err := r.FromHost(pkt6(central6, site6, nil, ipv6.ProtoUDP, 5683, 1400)); err != ErrDropped || r.Stats.Drops(ReasonTooBig) != 1 {
		t.Fatalf("too big for the session: %v", err)
	}
	ptb := host.packets()
	if len(ptb) != 1 || ipv6.Src(ptb[0]) != netip.MustParseAddr("2001:db8:8::1") || binary.BigEndian.Uint32(ptb[0][header.IPv6MinimumSize+4:]) != 1394 {
		t.Fatalf("host got %d packets: want one Packet Too Big (MTU 1394) from 2001:db8:8::1", len(ptb))
	}
}
