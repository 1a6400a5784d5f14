package ike

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Attribute is a data attribute (RFC 2408 §3.3). Basic (TV) attributes carry
// a 16-bit Value; variable (TLV) ones carry Data, whose big-endian value up to
// 8 bytes is also put in Value on parse.
type Attribute struct {
	Type  uint16 // without the AF bit
	Basic bool
	Value uint64
	Data  []byte // variable form only; aliases the input
}

// Transform is a transform payload (RFC 2408 §3.6).
type Transform struct {
	Num   uint8
	ID    uint8
	Attrs []Attribute
}

// Attr returns the value of attribute t and whether it is present.
func (t *Transform) Attr(typ uint16) (uint64, bool) {
	for _, a := range t.Attrs {
		if a.Type == typ {
			return a.Value, true
		}
	}
	return 0, false
}

// Proposal is a proposal payload (RFC 2408 §3.5).
type Proposal struct {
	Num        uint8
	Protocol   uint8
	SPI        []byte
	Transforms []Transform
}

// SAPayload is a Security Association payload (RFC 2408 §3.4, RFC 2407 §4.6.1).
type SAPayload struct {
	DOI       uint32
	Situation uint32
	Proposals []Proposal
}

// ParseSA validates and parses an SA payload body. Proposals and transforms
// are nested payloads with their own generic headers; every length is
// checked against what is left before a field is read.
func ParseSA(b []byte) (*SAPayload, error) {
	if len(b) < 8 {
		return nil, perr(0, "SA DOI/situation", ErrShort)
	}
	sa := &SAPayload{DOI: binary.BigEndian.Uint32(b), Situation: binary.BigEndian.Uint32(b[4:])}
	if sa.DOI != DOIIPsec {
		return nil, perr(0, "SA DOI", ErrBadPayload)
	}
	if sa.Situation&SituationIdentOnly == 0 || sa.Situation&^SituationIdentOnly != 0 {
		return nil, perr(4, "SA situation", ErrBadPayload)
	}
	off := 8
	next := PayloadProposal
	for next != PayloadNone {
		if next != PayloadProposal {
			return nil, perr(off, "proposal next payload", ErrBadPayload)
		}
		if len(b)-off < 8 {
			return nil, perr(off, "proposal header", ErrShort)
		}
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		if n < 8 || n > len(b)-off {
			return nil, perr(off+2, "proposal length", ErrBadLength)
		}
		p := b[off : off+n]
		next = PayloadType(p[0])
		prop := Proposal{Num: p[4], Protocol: p[5]}
		spiLen := int(p[6])
		nt := int(p[7])
		if 8+spiLen > n {
			return nil, perr(off+6, "proposal SPI size", ErrBadLength)
		}
		prop.SPI = p[8 : 8+spiLen]
		toff := 8 + spiLen
		tnext := PayloadTransform
		for i := 0; i < nt; i++ {
			if tnext != PayloadTransform {
				return nil, perr(off+toff, "transform next payload", ErrBadPayload)
			}
			if n-toff < 8 {
				return nil, perr(off+toff, "transform header", ErrShort)
			}
			tn := int(binary.BigEndian.Uint16(p[toff+2:]))
			if tn < 8 || tn > n-toff {
				return nil, perr(off+toff+2, "transform length", ErrBadLength)
			}
			tp := p[toff : toff+tn]
			tnext = PayloadType(tp[0])
			attrs, err := parseAttributes(tp[8:], off+toff+8)
			if err != nil {
				return nil, err
			}
			prop.Transforms = append(prop.Transforms, Transform{Num: tp[4], ID: tp[5], Attrs: attrs})
			toff += tn
		}
		if tnext != PayloadNone || toff != n || nt == 0 {
			return nil, perr(off+7, "transform count", ErrBadPayload)
		}
		sa.Proposals = append(sa.Proposals, prop)
		off += n
		if len(sa.Proposals) > 64 {
			return nil, perr(off, "proposal count", ErrBadPayload)
		}
	}
	if off != len(b) || len(sa.Proposals) == 0 {
		return nil, perr(off, "SA trailing bytes", ErrBadPayload)
	}
	return sa, nil
}

func parseAttributes(b []byte, base int) ([]Attribute, error) {
	var out []Attribute
	off := 0
	for off < len(b) {
		if len(b)-off < 4 {
			return nil, perr(base+off, "attribute header", ErrShort)
		}
		t := binary.BigEndian.Uint16(b[off:])
		v := binary.BigEndian.Uint16(b[off+2:])
		a := Attribute{Type: t &^ attrFormatBasic}
		if t&attrFormatBasic != 0 {
			a.Basic = true
			a.Value = uint64(v)
			off += 4
		} else {
			n := int(v)
			if n > len(b)-off-4 {
				return nil, perr(base+off+2, "attribute length", ErrBadLength)
			}
			a.Data = b[off+4 : off+4+n]
			if n <= 8 {
				for _, c := range a.Data {
					a.Value = a.Value<<8 | uint64(c)
				}
			} else {
				a.Value = ^uint64(0)
			}
			off += 4 + n
		}
		out = append(out, a)
		if len(out) > 64 {
			return nil, perr(base+off, "attribute count", ErrBadPayload)
		}
	}
	return out, nil
}

// Append appends the SA payload body.
func (sa *SAPayload) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, sa.DOI)
	b = binary.BigEndian.AppendUint32(b, sa.Situation)
	for i, p := range sa.Proposals {
		start := len(b)
		next := PayloadNone
		if i+1 < len(sa.Proposals) {
			next = PayloadProposal
		}
		b = append(b, byte(next), 0, 0, 0, p.Num, p.Protocol, byte(len(p.SPI)), byte(len(p.Transforms)))
		b = append(b, p.SPI...)
		for j, t := range p.Transforms {
			tstart := len(b)
			tnext := PayloadNone
			if j+1 < len(p.Transforms) {
				tnext = PayloadTransform
			}
			b = append(b, byte(tnext), 0, 0, 0, t.Num, t.ID, 0, 0)
			for _, a := range t.Attrs {
				b = a.append(b)
			}
			binary.BigEndian.PutUint16(b[tstart+2:], uint16(len(b)-tstart))
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

func (a Attribute) append(b []byte) []byte {
	if a.Basic {
		b = binary.BigEndian.AppendUint16(b, a.Type|attrFormatBasic)
		return binary.BigEndian.AppendUint16(b, uint16(a.Value))
	}
	d := a.Data
	if d == nil {
		d = binary.BigEndian.AppendUint32(nil, uint32(a.Value))
	}
	b = binary.BigEndian.AppendUint16(b, a.Type)
	b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
	return append(b, d...)
}

// basic returns a TV attribute.
func basic(t uint16, v uint16) Attribute { return Attribute{Type: t, Basic: true, Value: uint64(v)} }

// lifeAttr returns a duration attribute, TV when it fits in 16 bits.
func lifeAttr(t uint16, v uint64) Attribute {
	if v <= 0xffff {
		return basic(t, uint16(v))
	}
	return Attribute{Type: t, Value: v}
}

// Identification is an ID payload body (RFC 2407 §4.6.2).
type Identification struct {
	Type     IDType
	Protocol uint8
	Port     uint16
	Data     []byte // aliases the input
}

// ParseID validates and parses an ID payload body.
func ParseID(b []byte) (Identification, error) {
	if len(b) < 4 {
		return Identification{}, perr(0, "ID header", ErrShort)
	}
	id := Identification{Type: IDType(b[0]), Protocol: b[1], Port: binary.BigEndian.Uint16(b[2:]), Data: b[4:]}
	want := -1
	switch id.Type {
	case IDIPv4Addr:
		want = 4
	case IDIPv4AddrSubnet, IDIPv4AddrRange:
		want = 8
	case IDIPv6Addr:
		want = 16
	case IDIPv6AddrSubnet, IDIPv6AddrRange:
		want = 32
	case IDFQDN, IDUserFQDN, IDDERASN1DN, IDDERASN1GN, IDKeyID:
		if len(id.Data) == 0 {
			return Identification{}, perr(4, "ID data", ErrShort)
		}
	default:
		return Identification{}, perr(0, "ID type", ErrBadPayload)
	}
	if want >= 0 && len(id.Data) != want {
		return Identification{}, perr(4, "ID data length", ErrBadLength)
	}
	return id, nil
}

// Append appends the ID payload body.
func (id Identification) Append(b []byte) []byte {
	b = append(b, byte(id.Type), id.Protocol)
	b = binary.BigEndian.AppendUint16(b, id.Port)
	return append(b, id.Data...)
}

// Addr returns the address of an IPv4/IPv6 address ID.
func (id Identification) Addr() (netip.Addr, bool) {
	switch id.Type {
	case IDIPv4Addr, IDIPv6Addr:
		return netip.AddrFromSlice(id.Data)
	}
	return netip.Addr{}, false
}

// Prefix returns the prefix an address or subnet ID covers.
func (id Identification) Prefix() (netip.Prefix, bool) {
	switch id.Type {
	case IDIPv4Addr, IDIPv6Addr:
		a, ok := netip.AddrFromSlice(id.Data)
		return netip.PrefixFrom(a, a.BitLen()), ok
	case IDIPv4AddrSubnet, IDIPv6AddrSubnet:
		h := len(id.Data) / 2
		a, ok1 := netip.AddrFromSlice(id.Data[:h])
		m, ok2 := netip.AddrFromSlice(id.Data[h:])
		if !ok1 || !ok2 {
			return netip.Prefix{}, false
		}
		bits := 0
		for _, c := range m.AsSlice() {
			for c&0x80 != 0 {
				bits++
				c <<= 1
			}
			if c != 0 {
				return netip.Prefix{}, false
			}
		}
		return netip.PrefixFrom(a, bits).Masked(), true
	}
	return netip.Prefix{}, false
}

// AddrID returns an ID payload for one address.
func AddrID(a netip.Addr, proto uint8, port uint16) Identification {
	t := IDIPv4Addr
	if a.Is6() && !a.Is4In6() {
		t = IDIPv6Addr
	} else {
		a = a.Unmap()
	}
	return Identification{Type: t, Protocol: proto, Port: port, Data: a.AsSlice()}
}

// Notification is a Notification payload body (RFC 2408 §3.14).
type Notification struct {
	DOI      uint32
	Protocol uint8
	Type     NotifyType
	SPI      []byte
	Data     []byte
}

// ParseNotify validates and parses a Notification payload body.
func ParseNotify(b []byte) (Notification, error) {
	if len(b) < 8 {
		return Notification{}, perr(0, "notify header", ErrShort)
	}
	n := Notification{DOI: binary.BigEndian.Uint32(b), Protocol: b[4], Type: NotifyType(binary.BigEndian.Uint16(b[6:]))}
	spi := int(b[5])
	if spi > len(b)-8 {
		return Notification{}, perr(5, "notify SPI size", ErrBadLength)
	}
	n.SPI = b[8 : 8+spi]
	n.Data = b[8+spi:]
	return n, nil
}

// Append appends the Notification payload body.
func (n Notification) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, n.DOI)
	b = append(b, n.Protocol, byte(len(n.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(n.Type))
	b = append(b, n.SPI...)
	return append(b, n.Data...)
}

// Delete is a Delete payload body (RFC 2408 §3.15).
type Delete struct {
	DOI      uint32
	Protocol uint8
	SPIs     [][]byte
}

// ParseDelete validates and parses a Delete payload body.
func ParseDelete(b []byte) (Delete, error) {
	if len(b) < 8 {
		return Delete{}, perr(0, "delete header", ErrShort)
	}
	d := Delete{DOI: binary.BigEndian.Uint32(b), Protocol: b[4]}
	size := int(b[5])
	count := int(binary.BigEndian.Uint16(b[6:]))
	if size == 0 || size > 16 || size*count != len(b)-8 {
		return Delete{}, perr(5, "delete SPI size/count", ErrBadLength)
	}
	for i := 0; i < count; i++ {
		d.SPIs = append(d.SPIs, b[8+i*size:8+(i+1)*size])
	}
	return d, nil
}

// Append appends the Delete payload body. All SPIs must have one size.
func (d Delete) Append(b []byte) []byte {
	size := 0
	if len(d.SPIs) > 0 {
		size = len(d.SPIs[0])
	}
	b = binary.BigEndian.AppendUint32(b, d.DOI)
	b = append(b, d.Protocol, byte(size))
	b = binary.BigEndian.AppendUint16(b, uint16(len(d.SPIs)))
	for _, s := range d.SPIs {
		b = append(b, s...)
	}
	return b
}

// CertPayload is a Certificate or Certificate Request payload body (RFC
// 2408 §3.9, §3.10): an encoding byte and data (a DER certificate, or a CA
// distinguished name, possibly empty, in a request).
type CertPayload struct {
	Encoding uint8
	Data     []byte
}

// ParseCert validates and parses a CERT or CERTREQ payload body.
func ParseCert(b []byte) (CertPayload, error) {
	if len(b) < 1 {
		return CertPayload{}, perr(0, "cert encoding", ErrShort)
	}
	return CertPayload{Encoding: b[0], Data: b[1:]}, nil
}

// Append appends the payload body.
func (c CertPayload) Append(b []byte) []byte { return append(append(b, c.Encoding), c.Data...) }

// ParseNATOA parses a NAT-OA payload body (RFC 3947 §5.2): an ID type
// (IPv4 or IPv6 address), three reserved bytes, the address.
func ParseNATOA(b []byte) (netip.Addr, error) {
	if len(b) < 4 {
		return netip.Addr{}, perr(0, "NAT-OA header", ErrShort)
	}
	switch IDType(b[0]) {
	case IDIPv4Addr:
		if len(b) != 8 {
			return netip.Addr{}, perr(4, "NAT-OA address", ErrBadLength)
		}
	case IDIPv6Addr:
		if len(b) != 20 {
			return netip.Addr{}, perr(4, "NAT-OA address", ErrBadLength)
		}
	default:
		return netip.Addr{}, perr(0, "NAT-OA type", ErrBadPayload)
	}
	a, _ := netip.AddrFromSlice(b[4:])
	return a, nil
}

// AppendNATOA appends a NAT-OA payload body for a.
func AppendNATOA(b []byte, a netip.Addr) []byte {
	a = a.Unmap()
	t := IDIPv4Addr
	if a.Is6() {
		t = IDIPv6Addr
	}
	b = append(b, byte(t), 0, 0, 0)
	return append(b, a.AsSlice()...)
}

// String renders the ID for logs: an address, the FQDN or user@FQDN text,
// or the type and hex data. Control characters in FQDN text are escaped.
func (id Identification) String() string {
	if a, ok := id.Addr(); ok {
		return a.String()
	}
	switch id.Type {
	case IDFQDN, IDUserFQDN, IDKeyID:
		s := string(id.Data)
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				return fmt.Sprintf("%q", s)
			}
		}
		return s
	case IDDERASN1DN:
		var n pkix.RDNSequence
		if _, err := asn1.Unmarshal(id.Data, &n); err == nil {
			var name pkix.Name
			name.FillFromRDNSequence(&n)
			return name.String()
		}
	}
	return fmt.Sprintf("id%d:%x", id.Type, id.Data)
}
