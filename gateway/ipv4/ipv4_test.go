package ipv4

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestEncodeValidateChecksum(t *testing.T) {
	b := make([]byte, 28)
	Header(b).Encode(Fields{TotalLen: 28, ID: 7, DF: true, TTL: 64, Protocol: ProtoUDP,
		Src: netip.MustParseAddr("10.10.0.7"), Dst: netip.MustParseAddr("10.20.0.1")})
	h := Header(b)
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := Checksum(b[:20], 0); got != 0 {
		t.Errorf("checksum over header incl. checksum: got %#x, want 0", got)
	}
	if !h.DF() || h.TTL() != 64 || h.Protocol() != ProtoUDP || h.Dst() != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("fields: df %v ttl %d proto %d dst %v", h.DF(), h.TTL(), h.Protocol(), h.Dst())
	}
	// RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2, complement 220d.
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0x220d {
		t.Errorf("RFC 1071 example: got %#x, want 0x220d", got)
	}
}

func TestUpdateChecksumMatchesRecompute(t *testing.T) {
	b := make([]byte, 20)
	Header(b).Encode(Fields{TotalLen: 20, TTL: 64, Protocol: ProtoTCP, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.2")})
	old := binary.BigEndian.Uint16(b[4:])
	binary.BigEndian.PutUint16(b[4:], 0xbeef)
	inc := UpdateChecksum(binary.BigEndian.Uint16(b[10:]), old, 0xbeef)
	Header(b).SetChecksum()
	if got := binary.BigEndian.Uint16(b[10:]); got != inc {
		t.Errorf("incremental %#x, recomputed %#x", inc, got)
	}
}

func TestValidateRejects(t *testing.T) {
	good := make([]byte, 20)
	Header(good).Encode(Fields{TotalLen: 20, TTL: 1, Protocol: 1, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")})
	tests := []struct {
		name string
		mod  func(b []byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:19] }, ErrShort},
		{"v6", func(b []byte) []byte { b[0] = 0x65; return b }, ErrVersion},
		{"ihl 4", func(b []byte) []byte { b[0] = 0x44; return b }, ErrHeaderLen},
		{"ihl beyond", func(b []byte) []byte { b[0] = 0x46; return b }, ErrHeaderLen},
		{"total too long", func(b []byte) []byte { b[3] = 21; return b }, ErrTotalLen},
	}
	for _, tt := range tests {
		b := append([]byte(nil), good...)
		if got := Header(tt.mod(b)).Validate(); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
