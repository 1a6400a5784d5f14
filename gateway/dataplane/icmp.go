package dataplane

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// AppendFragNeeded appends an ICMP "fragmentation needed and DF set"
// (type 3 code 4) with the next-hop MTU (RFC 1191 §4) answering orig, sent
// from src. It quotes orig's IP header and first 8 payload bytes (RFC 792).
func AppendFragNeeded(b []byte, src netip.Addr, orig header.IPv4, mtu int) []byte {
	return appendICMPError(b, src, orig, header.ICMPv4DstUnreachable, header.ICMPv4FragmentationNeeded, uint32(mtu&0xffff))
}

// AppendTimeExceeded appends an ICMP time exceeded in transit (type 11
// code 0) answering orig.
func AppendTimeExceeded(b []byte, src netip.Addr, orig header.IPv4) []byte {
	return appendICMPError(b, src, orig, header.ICMPv4TimeExceeded, header.ICMPv4TTLExceeded, 0)
}

func appendICMPError(b []byte, src netip.Addr, orig header.IPv4, typ header.ICMPv4Type, code header.ICMPv4Code, rest uint32) []byte {
	quote := min(int(orig.HeaderLength())+8, int(orig.TotalLength()))
	total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + quote
	start := len(b)
	b = append(b, make([]byte, total)...)
	ip := header.IPv4(b[start:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: orig.SourceAddress()})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip[header.IPv4MinimumSize:])
	icmp.SetType(typ)
	icmp.SetCode(code)
	binary.BigEndian.PutUint32(icmp[4:], rest)
	copy(icmp[header.ICMPv4MinimumSize:], orig[:quote])
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return b
}

// isICMPError reports whether h is an ICMP error message, which must never
// trigger another ICMP error (RFC 1122 §3.2.2).
func isICMPError(h header.IPv4) bool {
	if h.TransportProtocol() != header.ICMPv4ProtocolNumber || h.FragmentOffset() != 0 {
		return false
	}
	pl := h.Payload()
	if len(pl) < 1 {
		return true
	}
	switch header.ICMPv4Type(pl[0]) {
	case header.ICMPv4DstUnreachable, header.ICMPv4SrcQuench, header.ICMPv4Redirect, header.ICMPv4TimeExceeded, header.ICMPv4ParamProblem:
		return true
	}
	return false
}

// decTTL decrements the TTL in place with an incremental checksum update.
func decTTL(h header.IPv4) {
	old := binary.BigEndian.Uint16(h[8:]) // TTL and protocol, one 16-bit word
	h.SetTTL(h.TTL() - 1)
	h.SetChecksum(updateChecksum(h.Checksum(), old, binary.BigEndian.Uint16(h[8:])))
}
