package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

// ICMP constants (RFC 792, RFC 1191 §4).
const (
	icmpDestUnreachable = 3
	icmpFragNeeded      = 4
	icmpTimeExceeded    = 11
)

// AppendFragNeeded appends an ICMP "fragmentation needed and DF set"
// (type 3 code 4) with the next-hop MTU (RFC 1191 §4) answering orig, sent
// from src. It quotes orig's IP header and first 8 payload bytes (RFC 792).
func AppendFragNeeded(b []byte, src netip.Addr, orig ipv4.Header, mtu int) []byte {
	return appendICMPError(b, src, orig, icmpDestUnreachable, icmpFragNeeded, uint32(mtu&0xffff))
}

// AppendTimeExceeded appends an ICMP time exceeded in transit (type 11
// code 0) answering orig.
func AppendTimeExceeded(b []byte, src netip.Addr, orig ipv4.Header) []byte {
	return appendICMPError(b, src, orig, icmpTimeExceeded, 0, 0)
}

func appendICMPError(b []byte, src netip.Addr, orig ipv4.Header, typ, code uint8, rest uint32) []byte {
	quote := orig.IHL() + 8
	if quote > orig.TotalLen() {
		quote = orig.TotalLen()
	}
	total := ipv4.HeaderLen + 8 + quote
	start := len(b)
	b = append(b, make([]byte, total)...)
	pkt := b[start:]
	ipv4.Header(pkt).Encode(ipv4.Fields{TotalLen: uint16(total), TTL: 64, Protocol: ipv4.ProtoICMP, Src: src, Dst: orig.Src()})
	icmp := pkt[ipv4.HeaderLen:]
	icmp[0], icmp[1] = typ, code
	binary.BigEndian.PutUint32(icmp[4:], rest)
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], ipv4.Checksum(icmp, 0))
	return b
}

// isICMPError reports whether h is an ICMP error message, which must never
// trigger another ICMP error (RFC 1122 §3.2.2).
func isICMPError(h ipv4.Header) bool {
	if h.Protocol() != ipv4.ProtoICMP || !h.FirstFragment() {
		return false
	}
	pl := h.Payload()
	if len(pl) < 1 {
		return true
	}
	switch pl[0] {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// decTTL decrements the TTL in place with an incremental checksum update.
func decTTL(h ipv4.Header) {
	old := binary.BigEndian.Uint16(h[8:])
	h[8]--
	binary.BigEndian.PutUint16(h[10:], ipv4.UpdateChecksum(binary.BigEndian.Uint16(h[10:]), old, binary.BigEndian.Uint16(h[8:])))
}
