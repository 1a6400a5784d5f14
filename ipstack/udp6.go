package ipstack

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// The pure IPv6/UDP codec of the routed-prefix data plane (prefix.go), the
// IPv6 twin of udp4.go: parse an inbound datagram to a routed address of
// the site's IPv6 prefix, build an outbound one and an ICMPv6 port
// unreachable. No state, no I/O; fuzzed by FuzzParseUDP6.

const (
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	protoTCP      = 6
	// maxExtHeaders bounds the extension-header walk (as gateway/ipv6).
	maxExtHeaders = 8
	// minIPv6MTU is the largest ICMPv6 error we send (RFC 4443 §2.4 (c)).
	minIPv6MTU = 1280
)

var (
	errExtHeaders = errors.New("ipstack: bad or too many IPv6 extension headers")
	errJumbo      = errors.New("ipstack: IPv6 jumbogram (payload length 0)")
)

// ipv6Dst returns the destination of a packet with at least a fixed IPv6
// header (the caller checked len >= 40).
func ipv6Dst(pkt []byte) netip.Addr { return netip.AddrFrom16([16]byte(pkt[24:40])) }

// ipv6Upper walks the extension headers (Hop-by-Hop first only, Routing,
// Destination Options; at most maxExtHeaders) and returns the upper-layer
// protocol and its offset. A Fragment header returns errFragment. pkt has
// a fixed header and its payload length was checked against len(pkt).
func ipv6Upper(pkt []byte) (proto byte, off int, err error) {
	nh, off := pkt[6], ipv6HeaderLen
	for i := 0; ; i++ {
		switch nh {
		case 0, 43, 60: // Hop-by-Hop, Routing, Destination Options
			if i == maxExtHeaders || (nh == 0 && i != 0) || off+8 > len(pkt) {
				return 0, 0, errExtHeaders
			}
			l := 8 + int(pkt[off+1])*8
			if off+l > len(pkt) {
				return 0, 0, errExtHeaders
			}
			nh, off = pkt[off], off+l
		case 44:
			return 0, 0, errFragment
		default:
			return nh, off, nil
		}
	}
}

// parseUDP6 parses an IPv6 packet carrying one whole UDP datagram and
// checks the UDP checksum (mandatory over IPv6, RFC 8200 §8.1).
func parseUDP6(pkt []byte) (udp4, error) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return udp4{}, errShort
	}
	pl := int(binary.BigEndian.Uint16(pkt[4:6]))
	if pl == 0 {
		return udp4{}, errJumbo
	}
	if ipv6HeaderLen+pl > len(pkt) {
		return udp4{}, errHeader
	}
	pkt = pkt[:ipv6HeaderLen+pl]
	proto, off, err := ipv6Upper(pkt)
	if err != nil {
		return udp4{}, err
	}
	if proto != protoUDP {
		return udp4{}, errNotUDP
	}
	u := pkt[off:]
	if len(u) < udpHeaderLen {
		return udp4{}, errShort
	}
	if int(binary.BigEndian.Uint16(u[4:6])) != len(u) {
		return udp4{}, errUDPLength
	}
	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := ipv6Dst(pkt)
	if binary.BigEndian.Uint16(u[6:8]) == 0 || pseudo6Checksum(src, dst, protoUDP, u) != 0xffff {
		return udp4{}, errChecksum
	}
	return udp4{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:4])),
		payload: u[udpHeaderLen:],
	}, nil
}

// pseudo6Checksum folds the IPv6 pseudo-header (RFC 8200 §8.1) and the
// upper-layer segment u (checksum field as it stands).
func pseudo6Checksum(src, dst netip.Addr, proto byte, u []byte) uint16 {
	var ph [40]byte
	s, d := src.As16(), dst.As16()
	copy(ph[0:16], s[:])
	copy(ph[16:32], d[:])
	binary.BigEndian.PutUint32(ph[32:36], uint32(len(u)))
	ph[39] = proto
	return checksum.Checksum(u, checksum.Checksum(ph[:], 0))
}

// appendIPv6Header appends a fixed 40-byte header.
func appendIPv6Header(b []byte, src, dst netip.Addr, proto byte, payloadLen int) []byte {
	s, d := src.As16(), dst.As16()
	h := [ipv6HeaderLen]byte{0: 0x60, 6: proto, 7: defaultTTL}
	binary.BigEndian.PutUint16(h[4:6], uint16(payloadLen))
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(b, h[:]...)
}

// appendUDP6 appends an IPv6 packet carrying payload from src to dst. The
// caller checked that it fits the MTU.
func appendUDP6(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	ul := udpHeaderLen + len(payload)
	b = appendIPv6Header(b, src.Addr(), dst.Addr(), protoUDP, ul)
	start := len(b)
	var h [udpHeaderLen]byte
	binary.BigEndian.PutUint16(h[0:2], src.Port())
	binary.BigEndian.PutUint16(h[2:4], dst.Port())
	binary.BigEndian.PutUint16(h[4:6], uint16(ul))
	b = append(b, h[:]...)
	b = append(b, payload...)
	xs := ^pseudo6Checksum(src.Addr(), dst.Addr(), protoUDP, b[start:])
	if xs == 0 {
		xs = 0xffff // zero is not allowed over IPv6
	}
	binary.BigEndian.PutUint16(b[start+6:start+8], xs)
	return b
}

// appendPortUnreachable6 appends an ICMPv6 destination unreachable / port
// unreachable (type 1 code 4, RFC 4443 §3.1) answering orig, from orig's
// destination to its source, quoting as much of orig as fits 1280 bytes.
// orig must have passed parseUDP6.
func appendPortUnreachable6(b []byte, orig []byte) []byte {
	quote := orig[:min(len(orig), minIPv6MTU-ipv6HeaderLen-8)]
	src := ipv6Dst(orig)
	dst := netip.AddrFrom16([16]byte(orig[8:24]))
	b = appendIPv6Header(b, src, dst, protoICMPv6, 8+len(quote))
	start := len(b)
	b = append(b, 1, 4, 0, 0, 0, 0, 0, 0)
	b = append(b, quote...)
	binary.BigEndian.PutUint16(b[start+2:start+4], ^pseudo6Checksum(src, dst, protoICMPv6, b[start:]))
	return b
}
