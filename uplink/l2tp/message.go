package l2tp

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Message is a decoded control message: its type and AVPs in wire order,
// without the leading Message Type AVP. A ZLB has Type MsgZLB and no AVPs.
type Message struct {
	Type MessageType
	// TypeOptional records a Message Type AVP without the M bit: an
	// unknown message type is then ignored rather than fatal (§4.4.1).
	TypeOptional bool
	AVPs         []AVP
}

// UnknownAVPError reports an unknown AVP with the M bit set (RFC 2661 §4.1:
// the receiver must tear down the session or tunnel the message belongs
// to). ParseControl returns it together with the otherwise decoded message.
type UnknownAVPError struct {
	Vendor uint16
	Type   AVPType
}

// Error names the AVP.
func (e *UnknownAVPError) Error() string {
	return fmt.Sprintf("l2tp: unknown mandatory AVP vendor %d type %d", e.Vendor, e.Type)
}

// Unwrap returns ErrUnknownMandatory.
func (e *UnknownAVPError) Unwrap() error { return ErrUnknownMandatory }

func knownAVP(vendor uint16, t uint16) bool {
	return vendor == 0 && t <= uint16(avpMaxKnown) && t != 20
}

// ParseControl validates and decodes a control message: header, then the
// AVPs (§4.1), unhiding hidden ones with secret (§4.3). Values of AVPs that
// were not hidden alias b. Unknown AVPs without the M bit are kept (so a
// message re-encodes to the same bytes); an unknown AVP with the M bit set
// yields the decoded message and an *UnknownAVPError.
func ParseControl(b []byte, secret []byte) (Header, Message, error) {
	var m Message
	h, err := ParseHeader(b)
	if err != nil {
		return h, m, err
	}
	if !h.Control {
		return h, m, perr(0, "flags", ErrBadFlags)
	}
	body := b[h.PayloadOffset:h.Length]
	if len(body) == 0 {
		return h, m, nil // ZLB
	}
	var rv []byte
	var unknown error
	first := true
	err = forEachAVP(body, h.PayloadOffset, func(r rawAVP) error {
		if first {
			first = false
			if r.vendor != 0 || r.typ != uint16(AVPMessageType) || len(r.value) != 2 || r.flags&avpH != 0 {
				return perr(r.off, "Message Type AVP", ErrNoMessageType)
			}
			m.Type = MessageType(binary.BigEndian.Uint16(r.value))
			m.TypeOptional = r.flags&avpM == 0
			return nil
		}
		a := AVP{Mandatory: r.flags&avpM != 0, Hidden: r.flags&avpH != 0, Vendor: r.vendor, Type: AVPType(r.typ), Value: r.value}
		if a.Hidden {
			if len(secret) == 0 || rv == nil {
				return perr(r.off, "hidden AVP", ErrHidden)
			}
			v, ok := unhideValue(a.Type, r.value, secret, rv)
			if !ok {
				return perr(r.off, "hidden AVP", ErrHidden)
			}
			a.Value = v
		}
		if a.Vendor == 0 && a.Type == AVPRandomVector {
			rv = a.Value
		}
		if !knownAVP(a.Vendor, uint16(a.Type)) && a.Mandatory && unknown == nil {
			unknown = &UnknownAVPError{Vendor: a.Vendor, Type: a.Type}
		}
		m.AVPs = append(m.AVPs, a)
		return nil
	})
	if err != nil {
		return h, m, err
	}
	if m.Type == MsgZLB {
		return h, m, perr(h.PayloadOffset, "Message Type AVP", ErrNoMessageType)
	}
	return h, m, unknown
}

// AppendControl appends a control message with header h (Control, HasLength
// and HasSeq are forced; Length is computed) and body m. AVPs marked Hidden
// are hidden with secret; a Random Vector AVP is inserted before the first
// of them unless m already carries one earlier, drawing 16 bytes and the
// padding from rnd (§4.3). A ZLB is m.Type == MsgZLB with no AVPs.
func AppendControl(b []byte, h Header, m *Message, secret []byte, rnd io.Reader) ([]byte, error) {
	h.Control, h.HasLength, h.HasSeq, h.HasOffset, h.Priority = true, true, true, false, false
	start := len(b)
	b = AppendHeader(b, &h)
	if m.Type != MsgZLB || len(m.AVPs) > 0 {
		b = appendAVP(b, !m.TypeOptional, false, 0, AVPMessageType, binary.BigEndian.AppendUint16(nil, uint16(m.Type)))
	}
	var rv []byte
	for i := range m.AVPs {
		a := &m.AVPs[i]
		if a.Vendor == 0 && a.Type == AVPRandomVector {
			rv = a.Value
		}
		v := a.Value
		if a.Hidden {
			if len(secret) == 0 {
				return nil, ErrHidden
			}
			if rv == nil {
				rv = make([]byte, 16)
				if _, err := io.ReadFull(rnd, rv); err != nil {
					return nil, err
				}
				b = appendAVP(b, true, false, 0, AVPRandomVector, rv)
			}
			var padLen [1]byte
			if _, err := io.ReadFull(rnd, padLen[:]); err != nil {
				return nil, err
			}
			hv, err := hideValue(a.Type, v, secret, rv, int(padLen[0]%16), rnd)
			if err != nil {
				return nil, err
			}
			v = hv
		}
		if len(v)+avpHeaderLen > avpLenMask {
			return nil, perr(len(b)-start, "AVP length", ErrTooLong)
		}
		b = appendAVP(b, a.Mandatory, a.Hidden, a.Vendor, a.Type, v)
	}
	n := len(b) - start
	if n > 0xffff {
		return nil, ErrTooLong
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	return b, nil
}

func appendAVP(b []byte, m, hidden bool, vendor uint16, t AVPType, v []byte) []byte {
	w := uint16(avpHeaderLen + len(v))
	if m {
		w |= avpM
	}
	if hidden {
		w |= avpH
	}
	b = binary.BigEndian.AppendUint16(b, w)
	b = binary.BigEndian.AppendUint16(b, vendor)
	b = binary.BigEndian.AppendUint16(b, uint16(t))
	return append(b, v...)
}

// Find returns the first IETF AVP of type t, or nil.
func (m *Message) Find(t AVPType) *AVP {
	for i := range m.AVPs {
		if m.AVPs[i].Vendor == 0 && m.AVPs[i].Type == t {
			return &m.AVPs[i]
		}
	}
	return nil
}

// Uint16 returns the value of a 2-byte AVP.
func (m *Message) Uint16(t AVPType) (uint16, bool) {
	if a := m.Find(t); a != nil {
		return a.Uint16()
	}
	return 0, false
}

// Uint32 returns the value of a 4-byte AVP.
func (m *Message) Uint32(t AVPType) (uint32, bool) {
	if a := m.Find(t); a != nil {
		return a.Uint32()
	}
	return 0, false
}

// Add appends a mandatory AVP with a raw value.
func (m *Message) Add(t AVPType, v []byte) *Message {
	m.AVPs = append(m.AVPs, AVP{Mandatory: true, Type: t, Value: v})
	return m
}

// AddOptional appends a non-mandatory AVP with a raw value.
func (m *Message) AddOptional(t AVPType, v []byte) *Message {
	m.AVPs = append(m.AVPs, AVP{Type: t, Value: v})
	return m
}

// AddUint16 appends a mandatory 2-byte AVP.
func (m *Message) AddUint16(t AVPType, v uint16) *Message {
	return m.Add(t, binary.BigEndian.AppendUint16(nil, v))
}

// AddUint32 appends a mandatory 4-byte AVP.
func (m *Message) AddUint32(t AVPType, v uint32) *Message {
	return m.Add(t, binary.BigEndian.AppendUint32(nil, v))
}

// ResultCode decodes a Result Code AVP (§4.4.2): result, error code and
// message; ok is false if absent or malformed.
func (m *Message) ResultCode() (result, code uint16, msg string, ok bool) {
	a := m.Find(AVPResultCode)
	if a == nil || len(a.Value) < 2 {
		return 0, 0, "", false
	}
	result = binary.BigEndian.Uint16(a.Value)
	if len(a.Value) >= 4 {
		code = binary.BigEndian.Uint16(a.Value[2:])
		msg = string(a.Value[4:])
	}
	return result, code, msg, true
}

// ResultCodeValue encodes a Result Code AVP value.
func ResultCodeValue(result, code uint16, msg string) []byte {
	v := binary.BigEndian.AppendUint16(nil, result)
	if code != 0 || msg != "" {
		v = binary.BigEndian.AppendUint16(v, code)
		v = append(v, msg...)
	}
	return v
}

// DataPayload validates a data message and returns its header and the PPP
// frame it carries (aliasing b). It never allocates.
func DataPayload(b []byte) (Header, []byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if h.Control {
		return h, nil, perr(0, "flags", ErrBadFlags)
	}
	end := len(b)
	if h.HasLength {
		end = int(h.Length)
	}
	return h, b[h.PayloadOffset:end], nil
}
