package engine_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/ipv6"
)

// ip6Packet builds an IPv6 packet of proto with l4 (its checksum field at
// ckOff filled in over the pseudo-header).
func ip6Packet(src, dst netip.Addr, proto uint8, l4 []byte, ckOff int) []byte {
	p := make([]byte, header.IPv6MinimumSize, header.IPv6MinimumSize+len(l4))
	p[0], p[6], p[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(l4)))
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	p = append(p, l4...)
	u := p[header.IPv6MinimumSize:]
	binary.BigEndian.PutUint16(u[ckOff:], 0)
	binary.BigEndian.PutUint16(u[ckOff:], ^checksum.Checksum(u, header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16()), uint16(len(u)))))
	return p
}

// TestUserspaceIPv6: the userspace data plane (gVisor, no TUN, no root)
// carries IPv6: with dataplane.addresses holding 2001:db8:200::10/128, a
// site whose identity has an IPv6 prefix reaches an in-process UDP echo
// service on [2001:db8:200::10]:7 and gets its datagram back (addresses,
// ports and payload checked), and the stack answers an ICMPv6 echo
// request; each of 10 datagrams comes back exactly once.
func TestUserspaceIPv6(t *testing.T) {
	central6 := netip.MustParseAddr("2001:db8:200::10")
	site := netip.MustParseAddr("2001:db8:8::17")
	y := strings.Replace(fmt.Sprintf(gwYAML, testPSK, "10.10.0.0/24", "  - {name: site6, ppp: {password: pw6}, ipv6_prefix: \"2001:db8:8::/64\"}\npolicy: {default: allow}\n"),
		"addresses: [10.20.0.10/32, 10.20.0.11/32]", "addresses: [10.20.0.10/32, \"2001:db8:200::10/128\"]", 1)
	cfg, err := config.Parse("gw.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, cfg, engine.Config{})
	g.udpEcho(t, netip.AddrPortFrom(central6, 7))
	cc := g.clientConfig("site6", "pw6")
	cc.IPv6 = true
	tn, _ := dial(t, cc)
	select {
	case <-tn.IPv6Up():
	case <-time.After(20 * time.Second):
		t.Fatalf("IPV6CP not up: %+v", tn.Info())
	}
	got := make(chan []byte, 64)
	tn.SetPacketHandler(func(p []byte) {
		if len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6 {
			got <- append([]byte(nil), p...)
		}
	})
	waitFor(t, "site6 registered", func() bool { return g.srv.Env().Sessions.ByIdentity("site6") != nil })

	const n = 10
	seen := map[uint32]int{}
	for seq := uint32(0); seq < n; seq++ {
		l4 := make([]byte, 12)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], 7)
		binary.BigEndian.PutUint16(l4[4:], 12)
		binary.BigEndian.PutUint32(l4[8:], seq)
		if err := tn.WritePacket(ip6Packet(site, central6, ipv6.ProtoUDP, l4, 6)); err != nil {
			t.Fatal(err)
		}
	}
	icmp := []byte{128, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'}
	if err := tn.WritePacket(ip6Packet(site, central6, ipv6.ProtoICMPv6, icmp, 2)); err != nil {
		t.Fatal(err)
	}
	pong := false
	deadline := time.After(20 * time.Second)
	for len(seen) < n || !pong {
		select {
		case p := <-got:
			h := header.IPv6(p)
			in, err := ipv6.Parse(h)
			if err != nil || ipv6.Src(h) != central6 || ipv6.Dst(h) != site {
				t.Fatalf("reply %v -> %v (%v), want %v -> %v", ipv6.Src(h), ipv6.Dst(h), err, central6, site)
			}
			l4 := p[in.L4:in.Len]
			switch {
			case in.Proto == ipv6.ProtoUDP && in.SrcPort == 7 && in.DstPort == 40000 && len(l4) == 12:
				seen[binary.BigEndian.Uint32(l4[8:])]++
			case in.Proto == ipv6.ProtoICMPv6 && l4[0] == 129 && bytes.Equal(l4[4:], icmp[4:]):
				pong = true
			default:
				t.Fatalf("unexpected reply: proto %d %x", in.Proto, l4)
			}
		case <-deadline:
			t.Fatalf("%d of %d UDP echoes, ICMPv6 echo reply %v; router drops %v", len(seen), n, pong, g.srv.Report().Drops)
		}
	}
	for s, c := range seen {
		if s >= n || c != 1 {
			t.Fatalf("datagram %d came back %d times", s, c)
		}
	}
}
