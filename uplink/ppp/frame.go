package ppp

import "encoding/binary"

// ParseFrame validates a synchronous PPP frame as carried by L2TP and
// returns its protocol and information field (aliasing b). The FF 03
// address and control bytes are optional (ACFC), and a one-byte protocol
// field (PFC, odd first byte) is accepted (RFC 1661 §2, §6.5, §6.6). It
// never allocates.
func ParseFrame(b []byte) (proto uint16, info []byte, err error) {
	off := 0
	if len(b) >= 2 && b[0] == 0xff && b[1] == 0x03 {
		off = 2
	}
	if len(b) <= off {
		return 0, nil, perr(off, "protocol", ErrShort)
	}
	if b[off]&1 == 1 {
		return uint16(b[off]), b[off+1:], nil
	}
	if len(b) < off+2 {
		return 0, nil, perr(off, "protocol", ErrShort)
	}
	proto = binary.BigEndian.Uint16(b[off:])
	if proto&0x0001 == 0 { // the low byte of a protocol number is odd
		return 0, nil, perr(off, "protocol", ErrBadPacket)
	}
	return proto, b[off+2:], nil
}

// Packet is a control protocol packet (RFC 1661 §5): LCP, IPCP, PAP or
// CHAP share this header.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Code      |  Identifier   |            Length             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    Data ...
//	+-+-+-+-+-+-+-+-+
type Packet struct {
	Code byte
	ID   byte
	Data []byte // aliases the input
}

// ParsePacket validates the header and Length (octets past Length are
// padding and ignored, RFC 1661 §5).
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < 4 {
		return Packet{}, perr(0, "packet header", ErrShort)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n < 4 || n > len(b) {
		return Packet{}, perr(2, "packet length", ErrBadLength)
	}
	return Packet{Code: b[0], ID: b[1], Data: b[4:n]}, nil
}

// AppendPacket appends the frame header for proto and the packet.
func AppendPacket(b []byte, proto uint16, p Packet) []byte {
	b = append(b, 0xff, 0x03)
	b = binary.BigEndian.AppendUint16(b, proto)
	b = append(b, p.Code, p.ID)
	b = binary.BigEndian.AppendUint16(b, uint16(4+len(p.Data)))
	return append(b, p.Data...)
}

// Option is one configuration option (RFC 1661 §6); Data aliases the
// input.
type Option struct {
	Type byte
	Data []byte
}

// ForEachOption validates and walks the options of a Configure packet.
func ForEachOption(b []byte, fn func(o Option) error) error {
	off := 0
	for off < len(b) {
		if len(b)-off < 2 {
			return perr(off, "option header", ErrShort)
		}
		n := int(b[off+1])
		if n < 2 || n > len(b)-off {
			return perr(off, "option length", ErrBadOption)
		}
		if err := fn(Option{Type: b[off], Data: b[off+2 : off+n]}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// ParseOptions returns all options of a Configure packet.
func ParseOptions(b []byte) ([]Option, error) {
	var out []Option
	err := ForEachOption(b, func(o Option) error { out = append(out, o); return nil })
	return out, err
}

// AppendOption appends one option.
func AppendOption(b []byte, t byte, data []byte) []byte {
	b = append(b, t, byte(2+len(data)))
	return append(b, data...)
}
