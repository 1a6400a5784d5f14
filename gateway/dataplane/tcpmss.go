package dataplane

import (
	"encoding/binary"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

const (
	tcpFlagSYN   = 0x02
	tcpOptEnd    = 0
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	ipTCPHeaders = 40 // IPv4 20 + TCP 20 (RFC 879 MSS = MTU - 40)
)

// ClampMSS lowers the MSS option of a TCP SYN (RFC 793 §3.1, RFC 879) in
// place to mtu-40 if it is larger, fixing the TCP checksum incrementally
// (RFC 1624). It reports whether it changed the packet. h must be valid.
func ClampMSS(h ipv4.Header, mtu int) bool {
	if h.Protocol() != ipv4.ProtoTCP || !h.FirstFragment() {
		return false
	}
	tcp := h.Payload()
	if len(tcp) < 20 || tcp[13]&tcpFlagSYN == 0 {
		return false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return false
	}
	limit := mtu - ipTCPHeaders
	if limit <= 0 {
		return false
	}
	opts := tcp[20:doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case tcpOptEnd:
			return false
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == tcpOptMSS && opts[i+1] == 4 {
			old := binary.BigEndian.Uint16(opts[i+2:])
			if int(old) <= limit {
				return false
			}
			binary.BigEndian.PutUint16(opts[i+2:], uint16(limit))
			// The MSS value sits at an even offset from the TCP header
			// only when i is even; RFC 1624 works on aligned words, so
			// update the word that contains it.
			off := 20 + i + 2
			if off%2 == 0 {
				cs := binary.BigEndian.Uint16(tcp[16:])
				binary.BigEndian.PutUint16(tcp[16:], ipv4.UpdateChecksum(cs, old, uint16(limit)))
			} else {
				recomputeTCP(h)
			}
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

func recomputeTCP(h ipv4.Header) {
	tcp := h.Payload()
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], ipv4.Checksum(tcp, ipv4.PseudoHeaderSum(h.Src(), h.Dst(), ipv4.ProtoTCP, len(tcp))))
}
