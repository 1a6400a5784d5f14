package ike

import (
	"encoding/binary"
)

// Header is the fixed ISAKMP header (RFC 2408 §3.1).
type Header struct {
	ICookie   [8]byte
	RCookie   [8]byte
	Next      PayloadType
	Version   uint8
	Exchange  Exchange
	Flags     uint8
	MessageID uint32
	Length    uint32
}

// Payload is one payload of a message: its type and body (the bytes after
// the 4-byte generic header). Body aliases the parsed buffer.
type Payload struct {
	Type PayloadType
	Body []byte
}

// Message is a parsed ISAKMP message. For an encrypted message (FlagEncryption)
// Payloads is empty and Encrypted holds the ciphertext until Decrypt.
type Message struct {
	Header    Header
	Payloads  []Payload
	Encrypted []byte
}

// ParseHeader validates and parses the ISAKMP header of b (RFC 2408 §3.1):
// the length field must cover the header and not exceed len(b).
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, perr(0, "header", ErrShort)
	}
	if b[17]>>4 != 1 {
		return h, perr(17, "version", ErrBadVersion)
	}
	n := binary.BigEndian.Uint32(b[24:28])
	if n < HeaderLen || int64(n) > int64(len(b)) || n > maxMessageLen {
		return h, perr(24, "length", ErrBadLength)
	}
	copy(h.ICookie[:], b[0:8])
	copy(h.RCookie[:], b[8:16])
	h.Next = PayloadType(b[16])
	h.Version = b[17]
	h.Exchange = Exchange(b[18])
	h.Flags = b[19]
	h.MessageID = binary.BigEndian.Uint32(b[20:24])
	h.Length = n
	return h, nil
}

// appendHeader appends h with the given total length.
func appendHeader(b []byte, h Header, length int) []byte {
	b = append(b, h.ICookie[:]...)
	b = append(b, h.RCookie[:]...)
	b = append(b, byte(h.Next), Version, byte(h.Exchange), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.MessageID)
	return binary.BigEndian.AppendUint32(b, uint32(length))
}

// ParseMessage validates and parses one ISAKMP datagram. Trailing bytes
// after the header's Length are ignored (RFC 2408 §3.1 lets the datagram
// carry padding). Payload bodies alias b.
func ParseMessage(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	m := &Message{Header: h}
	body := b[HeaderLen:h.Length]
	if h.Flags&FlagEncryption != 0 {
		m.Encrypted = body
		return m, nil
	}
	m.Payloads, err = parsePayloads(h.Next, body, HeaderLen)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// parsePayloads walks a payload chain starting with type first. Bytes after
// the last payload are tolerated (encryption padding, RFC 2409 Appendix B).
func parsePayloads(first PayloadType, b []byte, base int) ([]Payload, error) {
	var out []Payload
	next := first
	off := 0
	for next != PayloadNone {
		if len(b)-off < genericHeaderLen {
			return nil, perr(base+off, "generic payload header", ErrShort)
		}
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if n < genericHeaderLen || n > len(b)-off {
			return nil, perr(base+off+2, "payload length", ErrBadLength)
		}
		if b[off+1] != 0 {
			return nil, perr(base+off+1, "reserved", ErrBadPayload)
		}
		if !knownPayload(next) {
			return nil, perr(base+off, "payload type", ErrUnknownPayload)
		}
		out = append(out, Payload{Type: next, Body: b[off+genericHeaderLen : off+n]})
		next = PayloadType(b[off])
		off += n
		if len(out) > 64 {
			return nil, perr(base+off, "payload count", ErrBadPayload)
		}
	}
	return out, nil
}

func knownPayload(t PayloadType) bool {
	switch t {
	case PayloadSA, PayloadKE, PayloadID, PayloadCert, PayloadCertReq, PayloadHash,
		PayloadSig, PayloadNonce, PayloadNotify, PayloadDelete, PayloadVendorID,
		PayloadNATD, PayloadNATOA, PayloadNATDDraft, PayloadNATOADraft:
		return true
	}
	return false
}

// appendPayloads appends a payload chain (generic headers and bodies).
func appendPayloads(b []byte, ps []Payload) []byte {
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type
		}
		b = append(b, byte(next), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(genericHeaderLen+len(p.Body)))
		b = append(b, p.Body...)
	}
	return b
}

// AppendMessage appends an unencrypted ISAKMP message made of h and ps. The
// header's Next and Length are computed.
func AppendMessage(b []byte, h Header, ps []Payload) []byte {
	if len(ps) > 0 {
		h.Next = ps[0].Type
	} else {
		h.Next = PayloadNone
	}
	n := HeaderLen
	for _, p := range ps {
		n += genericHeaderLen + len(p.Body)
	}
	b = appendHeader(b, h, n)
	return appendPayloads(b, ps)
}

// Find returns the first payload of type t.
func (m *Message) Find(t PayloadType) (Payload, bool) {
	for _, p := range m.Payloads {
		if p.Type == t {
			return p, true
		}
	}
	return Payload{}, false
}

// All returns every payload of type t.
func (m *Message) All(t PayloadType) []Payload {
	var out []Payload
	for _, p := range m.Payloads {
		if p.Type == t {
			out = append(out, p)
		}
	}
	return out
}
