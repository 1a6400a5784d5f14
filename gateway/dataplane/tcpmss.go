package dataplane

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
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
func ClampMSS(h header.IPv4, mtu int) bool {
	if h.TransportProtocol() != header.TCPProtocolNumber || h.FragmentOffset() != 0 {
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
				binary.BigEndian.PutUint16(tcp[16:], updateChecksum(cs, old, uint16(limit)))
			} else {
				recomputeTCP(h)
			}
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

func recomputeTCP(h header.IPv4) {
	tcp := header.TCP(h.Payload())
	tcp.SetChecksum(0)
	tcp.SetChecksum(^checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(len(tcp)))))
}

// updateChecksum adjusts a stored Internet checksum hc when one aligned
// 16-bit word changes from old to new (RFC 1624 eqn. 3: HC' = ~(~HC + ~m +
// m')), for the TTL (decTTL) and MSS rewrites. gVisor's header package has
// this step but does not export it (checksumUpdate2ByteAlignedUint16); its
// exported checksum.Combine is the one's-complement addition.
func updateChecksum(hc, old, new uint16) uint16 {
	return ^checksum.Combine(^hc, checksum.Combine(^old, new))
}
