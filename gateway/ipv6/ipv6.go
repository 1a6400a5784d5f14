// Package ipv6 is the gateway's IPv6 packet codec (RFC 8200): header
// validation with a bounded walk of the extension header chain, fragment
// detection, TCP MSS clamping and ICMPv6 errors (RFC 4443). Pure functions
// over byte slices, fuzzed; no logging.
package ipv6

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

// HeaderLen is the fixed IPv6 header (RFC 8200 §3).
const HeaderLen = 40

// MinMTU is the IPv6 minimum link MTU (RFC 8200 §5).
const MinMTU = 1280

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

// Header is an IPv6 packet (fixed header first).
type Header []byte

// Src and Dst are the addresses; HopLimit the hop limit; PayloadLen the
// payload length field.
func (h Header) Src() netip.Addr { return netip.AddrFrom16([16]byte(h[8:24])) }

// Dst is the destination address.
func (h Header) Dst() netip.Addr { return netip.AddrFrom16([16]byte(h[24:40])) }

// HopLimit is the hop limit.
func (h Header) HopLimit() uint8 { return h[7] }

// PayloadLen is the payload length field.
func (h Header) PayloadLen() int { return int(binary.BigEndian.Uint16(h[4:])) }

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
func Parse(h Header) (Info, error) {
	if len(h) < HeaderLen {
		return Info{}, ErrShort
	}
	if h[0]>>4 != 6 {
		return Info{}, ErrVersion
	}
	pl := h.PayloadLen()
	if pl == 0 && h[6] == ProtoHopByHop || HeaderLen+pl > len(h) {
		return Info{}, ErrLength
	}
	if s := h.Src(); s.IsMulticast() || s.IsUnspecified() {
		return Info{}, ErrBadAddress
	}
	n := HeaderLen + pl
	next, off := h[6], HeaderLen
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

func upper(h Header, in *Info) error {
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

// PseudoHeaderSum is the RFC 8200 §8.1 pseudo-header's one's-complement
// sum, the initial value for ipv4.Checksum over the upper-layer packet.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var s uint32
	a, b := src.As16(), dst.As16()
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(a[i:])) + uint32(binary.BigEndian.Uint16(b[i:]))
	}
	return s + uint32(length>>16) + uint32(length&0xffff) + uint32(proto)
}

// DecHopLimit decrements the hop limit in place (IPv6 has no header
// checksum).
func DecHopLimit(h Header) { h[7]-- }

// ClampMSS lowers the MSS option of a TCP SYN to mtu-60 (IPv6 40 + TCP 20,
// RFC 8200 §8.3) in place, fixing the TCP checksum incrementally. in must
// come from Parse(h). It reports whether it changed the packet.
func ClampMSS(h Header, in Info, mtu int) bool {
	if in.Proto != ProtoTCP {
		return false
	}
	tcp := h[in.L4:in.Len]
	if len(tcp) < 20 || tcp[13]&0x02 == 0 {
		return false
	}
	doff := int(tcp[12]>>4) * 4
	limit := mtu - HeaderLen - 20
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
			if (20+i+2)%2 == 0 {
				cs := binary.BigEndian.Uint16(tcp[16:])
				binary.BigEndian.PutUint16(tcp[16:], ipv4.UpdateChecksum(cs, old, uint16(limit)))
			} else {
				tcp[16], tcp[17] = 0, 0
				binary.BigEndian.PutUint16(tcp[16:], ipv4.Checksum(tcp, PseudoHeaderSum(h.Src(), h.Dst(), ProtoTCP, len(tcp))))
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
func IsError(h Header, in Info) bool {
	return in.Proto == ProtoICMPv6 && h[in.L4] < 128
}

// AppendPacketTooBig appends an ICMPv6 Packet Too Big (RFC 4443 §3.2)
// from src answering orig with the given MTU; AppendTimeExceeded a Time
// Exceeded (hop limit, §3.3). Both quote as much of orig as keeps the
// error within the minimum MTU of 1280 (§2.4(c)).
func AppendPacketTooBig(b []byte, src netip.Addr, orig Header, origLen, mtu int) []byte {
	return appendError(b, src, orig[:origLen], ICMPPacketTooBig, 0, uint32(mtu))
}

// AppendTimeExceeded appends an ICMPv6 Time Exceeded, hop limit exceeded
// in transit (type 3 code 0).
func AppendTimeExceeded(b []byte, src netip.Addr, orig Header, origLen int) []byte {
	return appendError(b, src, orig[:origLen], ICMPTimeExceeded, 0, 0)
}

func appendError(b []byte, src netip.Addr, orig Header, typ, code uint8, rest uint32) []byte {
	quote := min(len(orig), MinMTU-HeaderLen-8)
	total := HeaderLen + 8 + quote
	start := len(b)
	b = append(b, make([]byte, total)...)
	p := b[start:]
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+quote))
	p[6], p[7] = ProtoICMPv6, 64
	s, d := src.As16(), orig.Src().As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	icmp := p[HeaderLen:]
	icmp[0], icmp[1] = typ, code
	binary.BigEndian.PutUint32(icmp[4:], rest)
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], ipv4.Checksum(icmp, PseudoHeaderSum(src, orig.Src(), ProtoICMPv6, len(icmp))))
	return b
}
