package coap

import (
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// GarbageReason says why the guard dropped a datagram.
type GarbageReason int

// Reasons, in the order the check finds them.
const (
	GarbageOK          GarbageReason = iota
	GarbageShort                     // shorter than a record header
	GarbageContentType               // not change_cipher_spec, alert, handshake, application_data or tls12_cid
	GarbageVersion                   // record version not DTLS 1.0 or 1.2
	GarbageLength                    // record length zero, past the datagram or over 2^14+2048
	GarbageNoSession                 // from an unknown peer and not a handshake in epoch 0
	GarbageHello                     // a new peer's handshake that is not an unfragmented ClientHello
	numGarbageReasons
)

var garbageNames = [...]string{"ok", "short", "content_type", "version", "length", "no_session", "hello"}

func (r GarbageReason) String() string {
	if r < 0 || int(r) >= len(garbageNames) {
		return "unknown"
	}
	return garbageNames[r]
}

// ClassifyDatagram checks that b is one or more DTLS record headers whose
// lengths exactly cover it; cidLen is the length of the Connection IDs the
// server hands out (tls12_cid records carry one). It never panics.
func ClassifyDatagram(b []byte, cidLen int) GarbageReason {
	if len(b) == 0 {
		return GarbageShort
	}
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			return GarbageShort
		}
		hdr := recordHeaderLen
		switch b[0] {
		case 20, 21, 22, 23:
		case ctCID:
			hdr += cidLen
			if len(b) < hdr {
				return GarbageShort
			}
		default:
			return GarbageContentType
		}
		if b[1] != 0xfe || (b[2] != 0xfd && b[2] != 0xff) {
			return GarbageVersion
		}
		n := int(b[hdr-2])<<8 | int(b[hdr-1])
		if n == 0 || n > maxRecordLen || hdr+n > len(b) { // pion refuses empty records too
			return GarbageLength
		}
		b = b[hdr+n:]
	}
	return GarbageOK
}

// startsHandshake reports a datagram whose first record is a handshake
// record in epoch 0 (a ClientHello from a new peer).
func startsHandshake(b []byte) bool {
	return len(b) >= recordHeaderLen && b[0] == 22 && b[3] == 0 && b[4] == 0
}

// recordCID returns the Connection ID of the first tls12_cid record.
func recordCID(b []byte, cidLen int) (string, bool) {
	for len(b) >= recordHeaderLen {
		hdr := recordHeaderLen
		if b[0] == ctCID {
			hdr += cidLen
			if len(b) < hdr {
				return "", false
			}
			return string(b[11 : 11+cidLen]), true
		}
		n := int(b[hdr-2])<<8 | int(b[hdr-1])
		if hdr+n > len(b) {
			return "", false
		}
		b = b[hdr+n:]
	}
	return "", false
}

// hasEpoch0 reports whether b holds a record in epoch 0 (handshake,
// change_cipher_spec or alert before the keys change).
func hasEpoch0(b []byte) bool {
	for p := b; len(p) >= recordHeaderLen && p[0] != ctCID; {
		if p[3] == 0 && p[4] == 0 {
			return true
		}
		n := recordHeaderLen + (int(p[11])<<8 | int(p[12]))
		if n > len(p) {
			return false
		}
		p = p[n:]
	}
	return false
}

// shiftEpoch0 adds base to the sequence number of every epoch-0 record in
// b (records are plaintext in epoch 0; the number is not in the handshake
// transcript).
func shiftEpoch0(b []byte, base uint64) []byte {
	for p := b; len(p) >= recordHeaderLen && p[0] != ctCID; {
		if p[3] == 0 && p[4] == 0 {
			seq := uint64(p[5])<<40 | uint64(p[6])<<32 | uint64(p[7])<<24 | uint64(p[8])<<16 | uint64(p[9])<<8 | uint64(p[10])
			seq += base
			for i := 10; i >= 5; i-- {
				p[i] = byte(seq)
				seq >>= 8
			}
		}
		n := recordHeaderLen + (int(p[11])<<8 | int(p[12]))
		if n > len(p) {
			break
		}
		p = p[n:]
	}
	return b
}

// serverHelloCID returns the Connection ID the server announced in an
// outgoing ServerHello (the one the peer will put in its records); hello
// reports whether b held a ServerHello at all.
func serverHelloCID(b []byte) (cid string, ok, hello bool) {
	pkts, err := recordlayer.UnpackDatagram(b)
	if err != nil || len(pkts) == 0 {
		return "", false, false
	}
	for _, pkt := range pkts {
		if len(pkt) < recordlayer.FixedHeaderSize+handshake.HeaderLength || pkt[0] != 22 {
			continue
		}
		var hh handshake.Header
		if err := hh.Unmarshal(pkt[recordlayer.FixedHeaderSize:]); err != nil || hh.Type != handshake.TypeServerHello {
			continue
		}
		var sh handshake.MessageServerHello
		if err := sh.Unmarshal(pkt[recordlayer.FixedHeaderSize+handshake.HeaderLength:]); err != nil {
			continue
		}
		for _, ext := range sh.Extensions {
			if e, ok := ext.(*extension.ConnectionID); ok && len(e.CID) > 0 {
				return string(e.CID), true, true
			}
		}
		return "", false, true
	}
	return "", false, false
}
