package ipv6

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	site    = netip.MustParseAddr("2001:db8:8::17")
	central = netip.MustParseAddr("2001:db8:200::10")
)

// build makes an IPv6 packet src→dst: ext are raw extension headers (their
// next-header bytes are fixed up), then the upper layer proto/l4.
func build(src, dst netip.Addr, ext [][]byte, proto uint8, l4 []byte) header.IPv6 {
	p := make([]byte, header.IPv6MinimumSize)
	p[0], p[7] = 0x60, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	nh := &p[6]
	for _, e := range ext {
		e = append([]byte(nil), e...)
		*nh = e[0] // the caller put its own type in byte 0
		off := len(p)
		p = append(p, e...)
		nh = &p[off]
	}
	*nh = proto
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-header.IPv6MinimumSize))
	return p
}

func tcpSYN(src, dst netip.Addr, mss uint16, pad int) []byte {
	doff := (20 + pad + 4 + 3) / 4 * 4 // End-of-options padding
	t := make([]byte, doff)
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 443)
	t[12], t[13] = byte(doff/4)<<4, 0x02
	for i := range pad {
		t[20+i] = 1 // NOP
	}
	t[20+pad], t[21+pad] = 2, 4
	binary.BigEndian.PutUint16(t[22+pad:], mss)
	binary.BigEndian.PutUint16(t[16:], ^checksum.Checksum(t, pseudo(src, dst, ProtoTCP, len(t))))
	return t
}

func TestParse(t *testing.T) {
	udp := []byte{0x9c, 0x40, 0x16, 0x33, 0, 8, 0, 0}
	hbh := []byte{ProtoHopByHop, 0, 1, 4, 0, 0, 0, 0}
	dopt := []byte{ProtoDestOpts, 0, 1, 4, 0, 0, 0, 0}
	frag := []byte{ProtoFragment, 0, 0, 1, 0, 0, 0, 7}
	good := build(site, central, [][]byte{hbh, dopt}, ProtoUDP, udp)
	in, err := Parse(good)
	if err != nil || in.Proto != ProtoUDP || in.L4 != 56 || !in.HasPorts || in.DstPort != 5683 || in.Len != len(good) {
		t.Fatalf("good: %+v %v", in, err)
	}
	long := make([][]byte, MaxExtHeaders+1)
	for i := range long {
		long[i] = dopt
	}
	multi := build(netip.MustParseAddr("ff02::1"), central, nil, ProtoUDP, udp)
	trunc := build(site, central, [][]byte{dopt}, ProtoUDP, udp)
	trunc[41] = 9 // header length 80 bytes: beyond the packet
	ver := append(header.IPv6(nil), good...)
	ver[0] = 0x40
	over := append(header.IPv6(nil), good...)
	binary.BigEndian.PutUint16(over[4:], 2000)
	jumbo := append(header.IPv6(nil), good...)
	binary.BigEndian.PutUint16(jumbo[4:], 0)
	for name, tc := range map[string]struct {
		h    header.IPv6
		want error
	}{
		"short":            {good[:39], ErrShort},
		"version":          {ver, ErrVersion},
		"length":           {over, ErrLength},
		"jumbogram":        {jumbo, ErrLength},
		"multicast source": {multi, ErrBadAddress},
		"hop-by-hop late":  {build(site, central, [][]byte{dopt, hbh}, ProtoUDP, udp), ErrExtHeader},
		"truncated ext":    {trunc, ErrExtHeader},
		"long chain":       {build(site, central, long, ProtoUDP, udp), ErrChain},
		"fragment":         {build(site, central, [][]byte{frag}, ProtoUDP, udp), ErrFragment},
		"no TCP header":    {build(site, central, nil, ProtoTCP, udp), ErrNoUpper},
	} {
		if _, err := Parse(tc.h); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// TestClampMSS: a SYN's MSS is lowered to mtu-60 and the TCP checksum
// stays valid (even and odd option offsets); a smaller MSS is left alone.
func TestClampMSS(t *testing.T) {
	for _, pad := range []int{0, 1} {
		h := build(site, central, nil, ProtoTCP, tcpSYN(site, central, 1440, pad))
		in, err := Parse(h)
		if err != nil {
			t.Fatal(err)
		}
		if !ClampMSS(h, in, 1394) {
			t.Fatalf("pad %d: not clamped", pad)
		}
		tcp := h[in.L4:]
		if got := binary.BigEndian.Uint16(tcp[22+pad:]); got != 1334 {
			t.Fatalf("pad %d: MSS %d, want 1334", pad, got)
		}
		if ^checksum.Checksum(tcp, pseudo(site, central, ProtoTCP, len(tcp))) != 0 {
			t.Fatalf("pad %d: TCP checksum broken", pad)
		}
		if ClampMSS(h, in, 1394) {
			t.Fatal("clamped twice")
		}
	}
}

// TestPacketTooBig: a valid ICMPv6 error (checksum, addresses, MTU),
// within 1280 bytes however large the original.
func TestPacketTooBig(t *testing.T) {
	orig := build(site, central, nil, ProtoUDP, make([]byte, 1450))
	gw := netip.MustParseAddr("fe80::1")
	p := header.IPv6(AppendPacketTooBig(nil, gw, orig, len(orig), 1394))
	in, err := Parse(p)
	if err != nil || in.Proto != ProtoICMPv6 || len(p) != header.IPv6MinimumMTU || Dst(p) != site || Src(p) != gw {
		t.Fatalf("PTB: %d bytes, %+v %v", len(p), in, err)
	}
	icmp := p[header.IPv6MinimumSize:]
	if icmp[0] != ICMPPacketTooBig || binary.BigEndian.Uint32(icmp[4:]) != 1394 || !IsError(p, in) {
		t.Fatalf("PTB fields %x", icmp[:8])
	}
	if ^checksum.Checksum(icmp, pseudo(gw, site, ProtoICMPv6, len(icmp))) != 0 {
		t.Fatal("ICMPv6 checksum broken")
	}
}

// pseudo is the RFC 8200 §8.1 pseudo-header sum, checksum.Checksum's
// initial value over an upper-layer packet.
func pseudo(src, dst netip.Addr, proto uint8, n int) uint16 {
	return header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16()), uint16(n))
}
