// Package pkttest builds the IPv4 packets tests send through tunnels,
// sessions and data planes: UDP datagrams, ICMP echo requests and tagged
// packets whose tag survives the trip; Tag, Src and Dst read them back.
// Headers carry valid checksums (gVisor's header package computes them), so
// real peers and tshark accept them.
package pkttest

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// UDP builds an IPv4/UDP datagram from src to dst with a valid IP header
// checksum and UDP checksum 0 ("none", RFC 768).
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	n := hdrLen + 8 + len(payload)
	b := make([]byte, n)
	encode(b, 0, header.UDPProtocolNumber, src.Addr(), dst.Addr())
	u := b[hdrLen:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	return b
}

// ICMPEcho builds an ICMP Echo Request (RFC 792) carrying payload; the IP
// identification is seq, as ping does.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, payload string) []byte {
	b := make([]byte, hdrLen+8+len(payload))
	encode(b, seq, header.ICMPv4ProtocolNumber, src, dst)
	m := b[hdrLen:]
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], ^checksum.Checksum(m, 0))
	return b
}

// TagPort is the UDP port (both ends) of Tagged packets.
const TagPort = 49999

// Tagged builds a UDP datagram of size bytes in all (at least 32) whose
// first 4 payload bytes are tag; Tag reads it back.
func Tagged(src, dst netip.Addr, tag uint32, size int) []byte {
	payload := make([]byte, max(size, hdrLen+8+4)-hdrLen-8)
	binary.BigEndian.PutUint32(payload, tag)
	return UDP(netip.AddrPortFrom(src, TagPort), netip.AddrPortFrom(dst, TagPort), payload)
}

// Tag returns the tag of a packet built by Tagged (0 if too short).
func Tag(p []byte) uint32 {
	if len(p) < hdrLen+8+4 {
		return 0
	}
	return binary.BigEndian.Uint32(p[hdrLen+8:])
}

// Src and Dst are an IPv4 packet's source and destination addresses (p
// holds at least the 20-byte header).
func Src(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(header.IPv4(p).SourceAddressSlice())) }

// Dst is the destination address (see Src).
func Dst(p []byte) netip.Addr {
	return netip.AddrFrom4([4]byte(header.IPv4(p).DestinationAddressSlice()))
}

const hdrLen = header.IPv4MinimumSize

// encode writes a 20-byte IPv4 header (TTL 64, identification id) with its
// checksum into b[:20]; the total length is len(b).
func encode(b []byte, id uint16, proto tcpip.TransportProtocolNumber, src, dst netip.Addr) {
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), ID: id, TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	h.SetChecksum(^h.CalculateChecksum())
}
