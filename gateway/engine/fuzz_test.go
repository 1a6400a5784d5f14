package engine

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// mainMode1 is the header of a first Main Mode message (RFC 2408 §3.1):
// initiator cookie, zero responder cookie, next payload SA, version 1.0,
// exchange 2, no flags, message ID 0, length.
func mainMode1(exch byte) []byte {
	b := make([]byte, 28+8)
	copy(b, []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88})
	b[16], b[17], b[18] = 1, 0x10, exch
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	return b
}

func TestFirstPhase1(t *testing.T) {
	later := mainMode1(exchIdentityProtection)
	later[15] = 1 // responder cookie set: not a first message
	tests := []struct {
		name string
		b    []byte
		natt bool
		want bool
	}{
		{"main mode on 500", mainMode1(exchIdentityProtection), false, true},
		{"aggressive mode on 500", mainMode1(exchAggressive), false, true},
		{"quick mode", mainMode1(32), false, false},
		{"responder cookie set", later, false, false},
		{"main mode on 4500 behind the marker", append([]byte{0, 0, 0, 0}, mainMode1(exchIdentityProtection)...), true, true},
		{"main mode on 4500 without the marker is ESP", mainMode1(exchIdentityProtection), true, false},
		{"NAT keepalive", []byte{0xff}, true, false},
		{"short", make([]byte, 27), false, false},
		{"empty", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic, got := firstPhase1(tt.b, tt.natt)
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if got && !bytes.Equal(ic[:], []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}) {
				t.Fatalf("initiator cookie %x", ic)
			}
		})
	}
}

// FuzzFirstPhase1: the classifier never panics, and what it admits has a
// zero responder cookie and a phase 1 exchange type.
func FuzzFirstPhase1(f *testing.F) {
	f.Add(mainMode1(exchIdentityProtection), false)
	f.Add(append([]byte{0, 0, 0, 0}, mainMode1(exchAggressive)...), true)
	f.Add([]byte{0xff}, true)
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, b []byte, natt bool) {
		ic, ok := firstPhase1(b, natt)
		if !ok {
			return
		}
		h := b
		if natt {
			h = b[nonESPMarkerLen:]
		}
		if !bytes.Equal(ic[:], h[:8]) || !bytes.Equal(h[8:16], make([]byte, 8)) || (h[18] != exchIdentityProtection && h[18] != exchAggressive) {
			t.Fatalf("admitted %x as a first phase 1 message", b)
		}
	})
}
