// Package ipv4 is a minimal zero-allocation view of IPv4 packets (RFC 791)
// and their TCP/UDP/ICMP transport headers, with the Internet checksum
// (RFC 1071) and its incremental update (RFC 1624). The gateway's data
// plane, MSS clamping and DHCPINFORM responder use it; codecs only, no I/O.
package ipv4

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// HeaderLen is the length of an IPv4 header without options.
const HeaderLen = 20

// Flag and fragment bits of the flags/fragment-offset word (RFC 791 §3.1).
const (
	flagDF     = 0x4000
	flagMF     = 0x2000
	offsetMask = 0x1fff
)

// Errors returned by Parse.
var (
	ErrShort     = errors.New("ipv4: packet shorter than its header")
	ErrVersion   = errors.New("ipv4: not an IPv4 packet")
	ErrHeaderLen = errors.New("ipv4: bad header length")
	ErrTotalLen  = errors.New("ipv4: total length exceeds packet")
)

// Header is a view of an IPv4 packet; accessors assume Validate passed.
type Header []byte

// Validate checks version, IHL and total length against len(h).
func (h Header) Validate() error {
	if len(h) < HeaderLen {
		return ErrShort
	}
	if h[0]>>4 != 4 {
		return ErrVersion
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < HeaderLen || ihl > len(h) {
		return ErrHeaderLen
	}
	tl := int(binary.BigEndian.Uint16(h[2:]))
	if tl < ihl || tl > len(h) {
		return ErrTotalLen
	}
	return nil
}

// IHL is the header length in bytes.
func (h Header) IHL() int { return int(h[0]&0x0f) * 4 }

// TotalLen is the total length field.
func (h Header) TotalLen() int { return int(binary.BigEndian.Uint16(h[2:])) }

// TTL is the time-to-live field.
func (h Header) TTL() uint8 { return h[8] }

// Protocol is the transport protocol number.
func (h Header) Protocol() uint8 { return h[9] }

// Src is the source address.
func (h Header) Src() netip.Addr { return netip.AddrFrom4([4]byte(h[12:16])) }

// Dst is the destination address.
func (h Header) Dst() netip.Addr { return netip.AddrFrom4([4]byte(h[16:20])) }

// DF reports the Don't Fragment bit.
func (h Header) DF() bool { return binary.BigEndian.Uint16(h[6:])&flagDF != 0 }

// FirstFragment reports whether this packet carries the transport header
// (fragment offset 0).
func (h Header) FirstFragment() bool { return binary.BigEndian.Uint16(h[6:])&offsetMask == 0 }

// Fragment reports whether the packet is a fragment (MF set or offset > 0).
func (h Header) Fragment() bool { return binary.BigEndian.Uint16(h[6:])&(flagMF|offsetMask) != 0 }

// Payload is the transport part (up to TotalLen).
func (h Header) Payload() []byte { return h[h.IHL():h.TotalLen()] }

// Ports returns the TCP/UDP source and destination ports, ok=false for
// other protocols, non-first fragments or short payloads.
func (h Header) Ports() (src, dst uint16, ok bool) {
	p := h.Protocol()
	if (p != ProtoTCP && p != ProtoUDP) || !h.FirstFragment() {
		return 0, 0, false
	}
	pl := h.Payload()
	if len(pl) < 4 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(pl), binary.BigEndian.Uint16(pl[2:]), true
}

// SetChecksum recomputes the header checksum.
func (h Header) SetChecksum() {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], Checksum(h[:h.IHL()], 0))
}

// Fields are what Encode writes into a 20-byte header.
type Fields struct {
	TotalLen uint16
	ID       uint16
	DF       bool
	TTL      uint8
	Protocol uint8
	Src, Dst netip.Addr
}

// Encode writes a 20-byte header with checksum into h[:20].
func (h Header) Encode(f Fields) {
	h[0] = 0x45
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:], f.TotalLen)
	binary.BigEndian.PutUint16(h[4:], f.ID)
	var ff uint16
	if f.DF {
		ff = flagDF
	}
	binary.BigEndian.PutUint16(h[6:], ff)
	h[8] = f.TTL
	h[9] = f.Protocol
	s, d := f.Src.As4(), f.Dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	h[:HeaderLen].SetChecksum()
}

// Checksum is the Internet checksum of b folded with an initial partial
// sum (RFC 1071), returned complemented, ready to store.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, initial))
}

func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// PseudoHeaderSum is the partial sum of the TCP/UDP pseudo-header
// (RFC 793 §3.1, RFC 768).
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s4, d4 := src.As4(), dst.As4()
	s := sum(s4[:], 0)
	s = sum(d4[:], s)
	return s + uint32(proto) + uint32(length)
}

// UpdateChecksum adjusts a stored checksum when a 16-bit word changes from
// old to new (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
func UpdateChecksum(hc, old, new uint16) uint16 {
	s := uint32(^hc) + uint32(^old) + uint32(new)
	return ^fold(s)
}
