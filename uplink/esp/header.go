package esp

import "encoding/binary"

// Header is a view of an ESP packet as it appears on the wire after the
// UDP encapsulation header (RFC 4303 §2): SPI, Sequence Number, then the
// payload. It is a gVisor-style accessor over the bytes; it never copies.
type Header []byte

// IsValid reports whether the view is long enough to hold the header.
func (h Header) IsValid() bool { return len(h) >= HeaderLen }

// SPI returns the Security Parameters Index (RFC 4303 §2.1).
func (h Header) SPI() uint32 { return binary.BigEndian.Uint32(h[0:4]) }

// Seq returns the 32-bit Sequence Number (RFC 4303 §2.2).
func (h Header) Seq() uint32 { return binary.BigEndian.Uint32(h[4:8]) }

// Payload returns the bytes after the header: IV, ciphertext, ICV.
func (h Header) Payload() []byte { return h[HeaderLen:] }

// HeaderFields are the cleartext fields of an ESP header.
type HeaderFields struct {
	SPI uint32
	Seq uint32
}

// Encode writes f into the first HeaderLen bytes of h.
func (h Header) Encode(f *HeaderFields) {
	binary.BigEndian.PutUint32(h[0:4], f.SPI)
	binary.BigEndian.PutUint32(h[4:8], f.Seq)
}
