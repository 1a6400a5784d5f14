package engine

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/fleetgate/fleetgate/uplink/ike"
)

var testICookie = [8]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}

// mainMode1 is a first phase 1 message (RFC 2408 §3.1, RFC 2409 §5):
// initiator cookie, zero responder cookie, exchange exch, one SA payload
// offering AES-128/SHA-256/PSK/MODP-2048.
func mainMode1(exch byte) []byte {
	attr := func(t, v uint16) ike.Attribute { return ike.Attribute{Type: t, Basic: true, Value: uint64(v)} }
	sa := ike.SAPayload{DOI: ike.DOIIPsec, Situation: ike.SituationIdentOnly, Proposals: []ike.Proposal{{
		Num: 1, Protocol: ike.ProtoISAKMP, Transforms: []ike.Transform{{Num: 1, ID: ike.TransformKeyIKE,
			Attrs: []ike.Attribute{attr(1, 7), attr(14, 128), attr(2, 4), attr(3, 1), attr(4, 14)}}},
	}}}
	return ike.AppendMessage(nil, ike.Header{ICookie: testICookie, Exchange: ike.Exchange(exch)},
		[]ike.Payload{{Type: ike.PayloadSA, Body: sa.Append(nil)}})
}

// emptySA is a first Main Mode header followed by an SA payload with no
// DOI, situation or proposal: it looks like a first message and is junk.
func emptySA() []byte {
	b := make([]byte, 28+8)
	copy(b, testICookie[:])
	b[16], b[17], b[18] = 1, 0x10, exchIdentityProtection
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	binary.BigEndian.PutUint16(b[30:], 8)
	return b
}

func TestFirstPhase1(t *testing.T) {
	later := mainMode1(exchIdentityProtection)
	later[15] = 1 // responder cookie set: not a first message
	header28 := mainMode1(exchIdentityProtection)[:28]
	header28[16] = 0
	binary.BigEndian.PutUint32(header28[24:], 28)
	encrypted := mainMode1(exchIdentityProtection)
	encrypted[19] = ike.FlagEncryption
	tests := []struct {
		name string
		b    []byte
		natt bool
		want firstKind
	}{
		{"main mode on 500", mainMode1(exchIdentityProtection), false, firstMM},
		{"aggressive mode passes uncharged", mainMode1(exchAggressive), false, notFirst},
		{"quick mode", mainMode1(32), false, notFirst},
		{"responder cookie set", later, false, notFirst},
		{"main mode on 4500 behind the marker", append([]byte{0, 0, 0, 0}, mainMode1(exchIdentityProtection)...), true, firstMM},
		{"main mode on 4500 without the marker is ESP", mainMode1(exchIdentityProtection), true, notFirst},
		{"NAT keepalive", []byte{0xff}, true, notFirst},
		{"28-byte header alone (finding 5)", header28, false, junkFirst},
		{"SA payload without proposals", emptySA(), false, junkFirst},
		{"encrypted first message", encrypted, false, junkFirst},
		{"truncated", mainMode1(exchIdentityProtection)[:40], false, junkFirst},
		{"short", make([]byte, 27), false, notFirst},
		{"empty", nil, false, notFirst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic, got := firstPhase1(tt.b, tt.natt)
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if got == firstMM && ic != testICookie {
				t.Fatalf("initiator cookie %x", ic)
			}
		})
	}
}

// FuzzFirstPhase1: the classifier never panics, and what it charges has a
// zero responder cookie, the Main Mode exchange type and an SA payload the
// responder's parser accepts.
func FuzzFirstPhase1(f *testing.F) {
	f.Add(mainMode1(exchIdentityProtection), false)
	f.Add(append([]byte{0, 0, 0, 0}, mainMode1(exchAggressive)...), true)
	f.Add(emptySA(), false)
	f.Add([]byte{0xff}, true)
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, b []byte, natt bool) {
		ic, kind := firstPhase1(b, natt)
		if kind != firstMM {
			return
		}
		h := b[:]
		if natt {
			h = b[nonESPMarkerLen:]
		}
		if !bytes.Equal(ic[:], h[:8]) || !bytes.Equal(h[8:16], make([]byte, 8)) || h[18] != exchIdentityProtection {
			t.Fatalf("charged %x as a first Main Mode message", b)
		}
		m, err := ike.ParseMessage(h)
		if err != nil {
			t.Fatalf("charged %x, which does not parse: %v", b, err)
		}
		if _, err := ike.ParseSA(m.Payloads[0].Body); err != nil {
			t.Fatalf("charged %x, whose SA does not parse: %v", b, err)
		}
	})
}
