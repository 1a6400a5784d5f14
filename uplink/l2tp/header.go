package l2tp

import "encoding/binary"

// Header is a decoded L2TPv2 header (RFC 2661 §3.1).
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|T|L|x|x|S|x|O|P|x|x|x|x|  Ver  |          Length (opt)         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Tunnel ID           |           Session ID          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|             Ns (opt)          |             Nr (opt)          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      Offset Size (opt)        |    Offset pad... (opt)
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type Header struct {
	Control   bool   // T: control message
	HasLength bool   // L: Length field present
	HasSeq    bool   // S: Ns and Nr present
	HasOffset bool   // O: Offset Size present
	Priority  bool   // P: data message with priority
	Length    uint16 // total message length, when HasLength
	TunnelID  uint16 // the receiver's tunnel ID
	SessionID uint16 // the receiver's session ID
	Ns, Nr    uint16 // sequence numbers, when HasSeq
	Offset    uint16 // offset size, when HasOffset
	// PayloadOffset is where the payload starts (header plus offset pad).
	PayloadOffset int
}

// ParseHeader validates and decodes the header at the start of b. It checks
// the version, the control-message flag rules (§3.1: L and S set, O and P
// clear), and that Length and the offset pad fit in b. With L set, the
// message ends at Length; the caller must ignore bytes after it.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < DataHeaderLen {
		return h, perr(0, "header", ErrShort)
	}
	flags := binary.BigEndian.Uint16(b)
	if flags&verMask != version2 {
		return h, perr(0, "version", ErrBadVersion)
	}
	h.Control = flags&flagT != 0
	h.HasLength = flags&flagL != 0
	h.HasSeq = flags&flagS != 0
	h.HasOffset = flags&flagO != 0
	h.Priority = flags&flagP != 0
	if h.Control && (!h.HasLength || !h.HasSeq || h.HasOffset || h.Priority) {
		return h, perr(0, "flags", ErrBadFlags)
	}
	off := 2
	if h.HasLength {
		h.Length = binary.BigEndian.Uint16(b[off:])
		off += 2
	}
	need := off + 4
	if h.HasSeq {
		need += 4
	}
	if h.HasOffset {
		need += 2
	}
	if len(b) < need {
		return h, perr(0, "header", ErrShort)
	}
	if h.HasLength && (int(h.Length) < need || int(h.Length) > len(b)) {
		return h, perr(2, "length", ErrBadLength)
	}
	h.TunnelID = binary.BigEndian.Uint16(b[off:])
	h.SessionID = binary.BigEndian.Uint16(b[off+2:])
	off += 4
	if h.HasSeq {
		h.Ns = binary.BigEndian.Uint16(b[off:])
		h.Nr = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	if h.HasOffset {
		h.Offset = binary.BigEndian.Uint16(b[off:])
		off += 2
		end := len(b)
		if h.HasLength {
			end = int(h.Length)
		}
		if off+int(h.Offset) > end {
			return h, perr(off-2, "offset size", ErrBadLength)
		}
		off += int(h.Offset)
	}
	h.PayloadOffset = off
	return h, nil
}

// Len returns the encoded header length of h (including any offset pad).
func (h *Header) Len() int {
	n := 6
	if h.HasLength {
		n += 2
	}
	if h.HasSeq {
		n += 4
	}
	if h.HasOffset {
		n += 2 + int(h.Offset)
	}
	return n
}

// AppendHeader appends the encoding of h to b. The Length field, when
// present, is written as h.Length; callers that do not know it yet patch it
// with PutLength. The offset pad is zeros.
func AppendHeader(b []byte, h *Header) []byte {
	flags := uint16(version2)
	if h.Control {
		flags |= flagT
	}
	if h.HasLength {
		flags |= flagL
	}
	if h.HasSeq {
		flags |= flagS
	}
	if h.HasOffset {
		flags |= flagO
	}
	if h.Priority {
		flags |= flagP
	}
	b = binary.BigEndian.AppendUint16(b, flags)
	if h.HasLength {
		b = binary.BigEndian.AppendUint16(b, h.Length)
	}
	b = binary.BigEndian.AppendUint16(b, h.TunnelID)
	b = binary.BigEndian.AppendUint16(b, h.SessionID)
	if h.HasSeq {
		b = binary.BigEndian.AppendUint16(b, h.Ns)
		b = binary.BigEndian.AppendUint16(b, h.Nr)
	}
	if h.HasOffset {
		b = binary.BigEndian.AppendUint16(b, h.Offset)
		for i := 0; i < int(h.Offset); i++ {
			b = append(b, 0)
		}
	}
	return b
}

// putDataHeader writes a data header without Length or Offset into b
// (which must hold DataHeaderLen, or DataSeqHeaderLen when seq) and returns
// its length. It is the allocation-free encoder of the data path.
func putDataHeader(b []byte, tid, sid uint16, seq bool, ns uint16) int {
	if seq {
		binary.BigEndian.PutUint16(b, flagS|version2)
		binary.BigEndian.PutUint16(b[2:], tid)
		binary.BigEndian.PutUint16(b[4:], sid)
		binary.BigEndian.PutUint16(b[6:], ns)
		binary.BigEndian.PutUint16(b[8:], 0)
		return DataSeqHeaderLen
	}
	binary.BigEndian.PutUint16(b, version2)
	binary.BigEndian.PutUint16(b[2:], tid)
	binary.BigEndian.PutUint16(b[4:], sid)
	return DataHeaderLen
}
