// Package pkttest builds the IPv4 packets tests send through tunnels,
// sessions and data planes: UDP datagrams, ICMP echo requests and tagged
// packets whose tag survives the trip. Headers carry valid checksums
// (gateway/ipv4 computes them), so real peers and tshark accept them.
package pkttest

import (
	"encoding/binary"
	"net/netip"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

// UDP builds an IPv4/UDP datagram from src to dst with a valid IP header
// checksum and UDP checksum 0 ("none", RFC 768).
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	n := ipv4.HeaderLen + 8 + len(payload)
	b := make([]byte, n)
	ipv4.Header(b).Encode(ipv4.Fields{TotalLen: uint16(n), TTL: 64, Protocol: ipv4.ProtoUDP, Src: src.Addr(), Dst: dst.Addr()})
	u := b[ipv4.HeaderLen:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	return b
}

// ICMPEcho builds an ICMP Echo Request (RFC 792) carrying payload; the IP
// identification is seq, as ping does.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, payload string) []byte {
	b := make([]byte, ipv4.HeaderLen+8+len(payload))
	ipv4.Header(b).Encode(ipv4.Fields{TotalLen: uint16(len(b)), ID: seq, TTL: 64, Protocol: ipv4.ProtoICMP, Src: src, Dst: dst})
	m := b[ipv4.HeaderLen:]
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], ipv4.Checksum(m, 0))
	return b
}

// TagPort is the UDP port (both ends) of Tagged packets.
const TagPort = 49999

// Tagged builds a UDP datagram of size bytes in all (at least 32) whose
// first 4 payload bytes are tag; Tag reads it back.
func Tagged(src, dst netip.Addr, tag uint32, size int) []byte {
	payload := make([]byte, max(size, ipv4.HeaderLen+8+4)-ipv4.HeaderLen-8)
	binary.BigEndian.PutUint32(payload, tag)
	return UDP(netip.AddrPortFrom(src, TagPort), netip.AddrPortFrom(dst, TagPort), payload)
}

// Tag returns the tag of a packet built by Tagged (0 if too short).
func Tag(p []byte) uint32 {
	if len(p) < ipv4.HeaderLen+8+4 {
		return 0
	}
	return binary.BigEndian.Uint32(p[ipv4.HeaderLen+8:])
}
