package l2tp

import (
	"crypto/md5"
	"encoding/binary"
	"io"
)

// AVP is one attribute-value pair (RFC 2661 §4.1).
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|M|H| rsvd  |      Length       |           Vendor ID           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Attribute Type        |        Attribute Value...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// After ParseMessage, Value holds the plain value (hidden AVPs are
// unhidden) and Hidden records that it was hidden on the wire. When
// encoding, Hidden asks for the value to be hidden (§4.3).
type AVP struct {
	Mandatory bool
	Hidden    bool
	Vendor    uint16
	Type      AVPType
	Value     []byte
}

// Uint16 returns the value as a 16-bit integer, ok false if the length is
// not 2.
func (a *AVP) Uint16() (uint16, bool) {
	if len(a.Value) != 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(a.Value), true
}

// Uint32 returns the value as a 32-bit integer, ok false if the length is
// not 4.
func (a *AVP) Uint32() (uint32, bool) {
	if len(a.Value) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(a.Value), true
}

// rawAVP is an AVP as it sits on the wire.
type rawAVP struct {
	flags  uint16
	vendor uint16
	typ    uint16
	value  []byte // aliases the input
	off    int
}

// forEachAVP walks the AVPs in b (validate-then-parse: every header and
// length is checked before use) and calls fn for each. Values alias b.
func forEachAVP(b []byte, base int, fn func(r rawAVP) error) error {
	off := 0
	for off < len(b) {
		left := len(b) - off
		if left < avpHeaderLen {
			return perr(base+off, "AVP header", ErrShort)
		}
		w := binary.BigEndian.Uint16(b[off:])
		n := int(w & avpLenMask)
		if n < avpHeaderLen || n > left {
			return perr(base+off, "AVP length", ErrBadAVP)
		}
		if w&avpReserved != 0 {
			return perr(base+off, "AVP reserved bits", ErrBadAVP)
		}
		r := rawAVP{
			flags:  w,
			vendor: binary.BigEndian.Uint16(b[off+2:]),
			typ:    binary.BigEndian.Uint16(b[off+4:]),
			value:  b[off+avpHeaderLen : off+n],
			off:    base + off,
		}
		if err := fn(r); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// hideValue hides an AVP value (RFC 2661 §4.3): the subformat is a 2-byte
// original length, the value and padding, XORed with an MD5 keystream
// b1 = MD5(type || secret || RV), bi = MD5(secret || c(i-1)). pad is the
// number of random padding bytes to add, read from rnd.
func hideValue(typ AVPType, value, secret, rv []byte, pad int, rnd io.Reader) ([]byte, error) {
	sub := make([]byte, 2+len(value)+pad)
	binary.BigEndian.PutUint16(sub, uint16(len(value)))
	copy(sub[2:], value)
	if pad > 0 {
		if _, err := io.ReadFull(rnd, sub[2+len(value):]); err != nil {
			return nil, err
		}
	}
	xorKeystream(sub, typ, secret, rv, false)
	return sub, nil
}

// unhideValue reverses hideValue and returns the original value.
func unhideValue(typ AVPType, hidden, secret, rv []byte) ([]byte, bool) {
	if len(hidden) < 2 {
		return nil, false
	}
	sub := append([]byte(nil), hidden...)
	xorKeystream(sub, typ, secret, rv, true)
	n := int(binary.BigEndian.Uint16(sub))
	if n > len(sub)-2 {
		return nil, false
	}
	return sub[2 : 2+n], true
}

// xorKeystream applies the §4.3 keystream to b in place. Each block after
// the first is keyed by the previous ciphertext block, which is the input
// when decrypting and the output when encrypting.
func xorKeystream(b []byte, typ AVPType, secret, rv []byte, decrypt bool) {
	h := md5.New()
	var t [2]byte
	binary.BigEndian.PutUint16(t[:], uint16(typ))
	h.Write(t[:])
	h.Write(secret)
	h.Write(rv)
	var sum [md5.Size]byte
	var prev [md5.Size]byte
	for i := 0; i < len(b); i += md5.Size {
		if i > 0 {
			h.Reset()
			h.Write(secret)
			h.Write(prev[:])
		}
		h.Sum(sum[:0])
		end := min(i+md5.Size, len(b))
		for j := i; j < end; j++ {
			c := b[j]
			b[j] ^= sum[j-i]
			if decrypt {
				prev[j-i] = c
			} else {
				prev[j-i] = b[j]
			}
		}
	}
}
