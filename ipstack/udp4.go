package ipstack

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// The pure IPv4/UDP codec of the routed-prefix data plane (prefix.go):
// parse an inbound datagram, build an outbound one and an ICMP port
// unreachable. No state, no I/O; fuzzed by FuzzParseUDP4.

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	protoICMP     = 1
	protoUDP      = 17
	defaultTTL    = 64
)

// Parse outcomes other than success. errNotUDP and errFragment are not
// malformed input: the packet is left to gVisor (errNotUDP) or dropped
// and counted (errFragment).
var (
	errShort     = errors.New("ipstack: packet shorter than its headers")
	errHeader    = errors.New("ipstack: bad IPv4 header (version, length or checksum)")
	errNotUDP    = errors.New("ipstack: not UDP")
	errFragment  = errors.New("ipstack: fragmented datagram")
	errUDPLength = errors.New("ipstack: UDP length does not match the IP length")
	errChecksum  = errors.New("ipstack: bad UDP checksum")
)

// udp4 is one parsed datagram; payload aliases the packet.
type udp4 struct {
	src, dst netip.AddrPort
	payload  []byte
}

// ipv4Dst returns the destination address of a packet that has at least a
// minimal IPv4 header (the caller checked len >= 20).
func ipv4Dst(pkt []byte) netip.Addr { return netip.AddrFrom4([4]byte(pkt[16:20])) }

// parseUDP4 parses an IPv4 packet carrying one whole UDP datagram and
// checks both checksums (a zero UDP checksum means none, RFC 768).
func parseUDP4(pkt []byte) (udp4, error) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return udp4{}, errShort
	}
	hl := int(pkt[0]&0x0f) * 4
	tl := int(binary.BigEndian.Uint16(pkt[2:4]))
	if hl < ipv4HeaderLen || tl < hl || tl > len(pkt) || checksum.Checksum(pkt[:hl], 0) != 0xffff {
		return udp4{}, errHeader
	}
	if pkt[9] != protoUDP {
		return udp4{}, errNotUDP
	}
	if ff := binary.BigEndian.Uint16(pkt[6:8]); ff&0x2000 != 0 || ff&0x1fff != 0 {
		return udp4{}, errFragment
	}
	u := pkt[hl:tl]
	if len(u) < udpHeaderLen {
		return udp4{}, errShort
	}
	if int(binary.BigEndian.Uint16(u[4:6])) != len(u) {
		return udp4{}, errUDPLength
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	if binary.BigEndian.Uint16(u[6:8]) != 0 && udpChecksum(src, dst, u) != 0xffff {
		return udp4{}, errChecksum
	}
	return udp4{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:4])),
		payload: u[udpHeaderLen:],
	}, nil
}

// udpChecksum folds the pseudo-header and the whole UDP segment u (header
// included, checksum field as it stands).
func udpChecksum(src, dst netip.Addr, u []byte) uint16 {
	var ph [12]byte
	s, d := src.As4(), dst.As4()
	copy(ph[0:4], s[:])
	copy(ph[4:8], d[:])
	ph[9] = protoUDP
	binary.BigEndian.PutUint16(ph[10:12], uint16(len(u)))
	return checksum.Checksum(u, checksum.Checksum(ph[:], 0))
}

// appendIPv4Header appends a 20-byte header (no options, DF clear).
func appendIPv4Header(b []byte, src, dst netip.Addr, proto byte, id uint16, total int) []byte {
	s, d := src.As4(), dst.As4()
	h := [ipv4HeaderLen]byte{0: 0x45, 8: defaultTTL, 9: proto}
	binary.BigEndian.PutUint16(h[2:4], uint16(total))
	binary.BigEndian.PutUint16(h[4:6], id)
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], ^checksum.Checksum(h[:], 0))
	return append(b, h[:]...)
}

// appendUDP4 appends an IPv4 packet carrying payload from src to dst. The
// caller checked that it fits the MTU.
func appendUDP4(b []byte, src, dst netip.AddrPort, id uint16, payload []byte) []byte {
	total := ipv4HeaderLen + udpHeaderLen + len(payload)
	b = appendIPv4Header(b, src.Addr(), dst.Addr(), protoUDP, id, total)
	start := len(b)
	var h [udpHeaderLen]byte
	binary.BigEndian.PutUint16(h[0:2], src.Port())
	binary.BigEndian.PutUint16(h[2:4], dst.Port())
	binary.BigEndian.PutUint16(h[4:6], uint16(udpHeaderLen+len(payload)))
	b = append(b, h[:]...)
	b = append(b, payload...)
	xs := ^udpChecksum(src.Addr(), dst.Addr(), b[start:])
	if xs == 0 {
		xs = 0xffff // zero means "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(b[start+6:start+8], xs)
	return b
}

// appendPortUnreachable appends an ICMP destination unreachable / port
// unreachable (type 3 code 3, RFC 792) answering orig: from orig's
// destination to its source, quoting its IP header and 8 bytes of data.
// orig must have passed parseUDP4.
func appendPortUnreachable(b []byte, orig []byte, id uint16) []byte {
	hl := int(orig[0]&0x0f) * 4
	quote := orig[:min(len(orig), hl+8)]
	total := ipv4HeaderLen + 8 + len(quote)
	src := netip.AddrFrom4([4]byte(orig[16:20]))
	dst := netip.AddrFrom4([4]byte(orig[12:16]))
	b = appendIPv4Header(b, src, dst, protoICMP, id, total)
	start := len(b)
	b = append(b, 3, 3, 0, 0, 0, 0, 0, 0)
	b = append(b, quote...)
	binary.BigEndian.PutUint16(b[start+2:start+4], ^checksum.Checksum(b[start:], 0))
	return b
}
