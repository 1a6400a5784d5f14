// Package ipv6 is the gateway's IPv6 packet validation (RFC 8200): a
// bounded walk of the extension header chain, fragment detection, TCP MSS
// clamping and ICMPv6 errors (RFC 4443), over gVisor's header.IPv6 view
// (fixed header fields, addresses, checksums). gVisor's
// IPv6PayloadIterator is not used for the walk: it has no bound on the
// number of extension headers, does not know AH, and works on a
// buffer.Buffer, while the router holds a []byte and must not allocate.
// Pure functions, fuzzed; no logging.
package ipv6

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Next-header values (IANA).
const (
	ProtoHopByHop = 0
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDestOpts = 60
)

// MaxExtHeaders bounds the extension headers walked per packet (RFC 8200
// §4.1 recommends one of each at most; a chain longer than this is refused
// rather than walked: RFC 7112 lets routers drop over-long chains).
const MaxExtHeaders = 8

// Errors of Parse.
var (
	ErrShort      = errors.New("ipv6: shorter than the header")
	ErrVersion    = errors.New("ipv6: version is not 6")
	ErrLength     = errors.New("ipv6: payload length beyond the packet (or a jumbogram)")
	ErrExtHeader  = errors.New("ipv6: extension header truncated or misplaced")
	ErrChain      = errors.New("ipv6: extension header chain too long")
	ErrFragment   = errors.New("ipv6: fragment (not reassembled here)")
	ErrNoUpper    = errors.New("ipv6: upper-layer header truncated")
	ErrBadAddress = errors.New("ipv6: multicast or unspecified source")
)

// Src and Dst are an IPv6 header's addresses as netip.Addr (gVisor's
// accessors return tcpip.Address); the conversion does not allocate.
func Src(h header.IPv6) netip.Addr { return netip.AddrFrom16([16]byte(h.SourceAddressSlice())) }

// Dst is the destination address (see Src).
func Dst(h header.IPv6) netip.Addr { return netip.AddrFrom16([16]byte(h.DestinationAddressSlice())) }

// Info is what Parse found.
type Info struct {
	// Len is the packet's length per its header (40 + payload length);
	// trailing bytes beyond it are padding of the lower layer.
	Len int
	// Proto is the upper-layer protocol and L4 its offset.
	Proto uint8
	L4    int
	// Ports (TCP/UDP destination and source) when Proto has them.
	SrcPort, DstPort uint16
	HasPorts         bool
}

// Parse validates h (RFC 8200): version, payload length within the packet,
// no jumbogram, a source that is neither multicast nor unspecified, an
// extension header chain of at most MaxExtHeaders with each header inside
// the packet and Hop-by-Hop only first, and, for TCP, UDP and ICMPv6, the
// upper-layer header present. A Fragment header is ErrFragment: the gateway
// does not reassemble (its sessions' MTU is announced, and PMTUD with
// ICMPv6 Packet Too Big works end to end). It does not allocate.
func Parse(h header.IPv6) (Info, error) {
	if len(h) < header.IPv6MinimumSize {
		return Info{}, ErrShort
	}
	if header.IPVersion(h) != header.IPv6Version {
		return Info{}, ErrVersion
	}
	pl := int(h.PayloadLength())
	if pl == 0 && h.NextHeader() == ProtoHopByHop || header.IPv6MinimumSize+pl > len(h) {
		return Info{}, ErrLength
	}
	if s := Src(h); s.IsMulticast() || s.IsUnspecified() {
		return Info{}, ErrBadAddress
	}
	n := header.IPv6MinimumSize + pl
	next, off := h.NextHeader(), header.IPv6MinimumSize
	for i := 0; ; i++ {
		switch next {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoAH, ProtoFragment:
		default:
			in := Info{Len: n, Proto: next, L4: off}
			return in, upper(h[:n], &in)
		}
		if i == MaxExtHeaders {
			return Info{}, ErrChain
		}
		if next == ProtoHopByHop && i != 0 {
			return Info{}, ErrExtHeader // RFC 8200 §4.3: only right after the header
		}
		if off+8 > n {
			return Info{}, ErrExtHeader
		}
		var l int
		switch next {
		case ProtoFragment:
			return Info{}, ErrFragment
		case ProtoAH:
			l = (int(h[off+1]) + 2) * 4 // RFC 4302 §2.2: 32-bit words minus 2
		default:
			l = (int(h[off+1]) + 1) * 8
		}
		if off+l > n {
			return Info{}, ErrExtHeader
		}
		next, off = h[off], off+l
	}
}

func upper(h header.IPv6, in *Info) error {
	l4 := h[in.L4:]
	switch in.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return ErrNoUpper
		}
	case ProtoUDP:
		if len(l4) < 8 {
			return ErrNoUpper
		}
	case ProtoICMPv6:
		if len(l4) < 4 {
			return ErrNoUpper
		}
		return nil
	default:
		return nil
	}
	in.SrcPort, in.DstPort, in.HasPorts = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:]), true
	return nil
}

// ClampMSS lowers the MSS option of a TCP SYN to mtu-60 (IPv6 40 + TCP 20,
// RFC 8200 §8.3) in place, fixing the TCP checksum incrementally. in must
// come from Parse(h). It reports whether it changed the packet.
func ClampMSS(h header.IPv6, in Info, mtu int) bool {
	if in.Proto != ProtoTCP {
		return false
	}
	tcp := h[in.L4:in.Len]
	if len(tcp) < 20 || tcp[13]&0x02 == 0 {
		return false
	}
	doff := int(tcp[12]>>4) * 4
	limit := mtu - header.IPv6MinimumSize - header.TCPMinimumSize
	if doff < 20 || doff > len(tcp) || limit <= 0 {
		return false
	}
	opts := tcp[20:doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return false
		}
		if opts[i] == 2 && opts[i+1] == 4 {
			old := binary.BigEndian.Uint16(opts[i+2:])
			if int(old) <= limit {
				return false
			}
			binary.BigEndian.PutUint16(opts[i+2:], uint16(limit))
			t := header.TCP(tcp)
			if (20+i+2)%2 == 0 {
				// RFC 1624 eqn. 3 (gVisor does not export its update).
				t.SetChecksum(^checksum.Combine(^t.Checksum(), checksum.Combine(^old, uint16(limit))))
			} else {
				t.SetChecksum(0)
				t.SetChecksum(^checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(len(tcp)))))
			}
			return true
		}
		i += int(opts[i+1])
	}
	return false
}

// ICMPv6 error types (RFC 4443 §3).
const (
	ICMPDestUnreachable = 1
	ICMPPacketTooBig    = 2
	ICMPTimeExceeded    = 3
)

// IsError reports whether in/h is an ICMPv6 error message (types below
// 128), which must never trigger another error (RFC 4443 §2.4(e)).
func IsError(h header.IPv6, in Info) bool {
	return in.Proto == ProtoICMPv6 && h[in.L4] < 128
}

// AppendPacketTooBig appends an ICMPv6 Packet Too Big (RFC 4443 §3.2)
// from src answering orig with the given MTU; AppendTimeExceeded a Time
// Exceeded (hop limit, §3.3). Both quote as much of orig as keeps the
// error within the minimum MTU of 1280 (§2.4(c)).
func AppendPacketTooBig(b []byte, src netip.Addr, orig header.IPv6, origLen, mtu int) []byte {
	return appendError(b, src, orig[:origLen], ICMPPacketTooBig, 0, uint32(mtu))
}

// AppendTimeExceeded appends an ICMPv6 Time Exceeded, hop limit exceeded
// in transit (type 3 code 0).
func AppendTimeExceeded(b []byte, src netip.Addr, orig header.IPv6, origLen int) []byte {
	return appendError(b, src, orig[:origLen], ICMPTimeExceeded, 0, 0)
}

func appendError(b []byte, src netip.Addr, orig header.IPv6, typ, code uint8, rest uint32) []byte {
	quote := min(len(orig), header.IPv6MinimumMTU-header.IPv6MinimumSize-header.ICMPv6MinimumSize)
	total := header.IPv6MinimumSize + header.ICMPv6MinimumSize + quote
	start := len(b)
	b = append(b, make([]byte, total)...)
	ip := header.IPv6(b[start:])
	from, to := tcpip.AddrFrom16(src.As16()), orig.SourceAddress()
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(header.ICMPv6MinimumSize + quote),
		TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64, SrcAddr: from, DstAddr: to})
	icmp := header.ICMPv6(ip[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6Type(typ))
	icmp.SetCode(header.ICMPv6Code(code))
	binary.BigEndian.PutUint32(icmp[4:], rest)
	copy(icmp[header.ICMPv6MinimumSize:], orig[:quote])
	icmp.SetChecksum(^checksum.Checksum(icmp, header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, from, to, uint16(len(icmp)))))
	return b
}
