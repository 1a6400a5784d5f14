package dataplane

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestMalformedIPv4 sends headers that header.IPv4.IsValid refuses (the
// cases gateway/ipv4's Validate had errors for) from a session and from
// the host: each is counted under ReasonMalformed and goes nowhere.
func TestMalformedIPv4(t *testing.T) {
	good := func() []byte {
		return pkt(t, header.UDPProtocolNumber, "10.10.0.7", "10.20.0.20", 40000, 5683, 28, false)
	}
	tests := []struct {
		name string
		mod  func(b []byte) []byte
	}{
		{"shorter than the header", func(b []byte) []byte { return b[:19] }},
		{"header length 16", func(b []byte) []byte { b[0] = 0x44; return b }},
		{"header length beyond the packet", func(b []byte) []byte { b[0] = 0x4f; return b }},
		{"total length beyond the packet", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 29); return b }},
		{"total length below the header", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, false)
			if err := f.r.FromSession(f.hall7, tt.mod(good())); err == nil {
				t.Fatal("from session: forwarded")
			}
			if err := f.r.FromHost(tt.mod(good())); err == nil {
				t.Fatal("from host: forwarded")
			}
			if got := f.r.Stats.Drops(ReasonMalformed); got != 2 {
				t.Errorf("drops[%v]: got %d, want 2", ReasonMalformed, got)
			}
			if len(f.host.packets())+len(f.hall7.packets()) != 0 {
				t.Error("a malformed packet was written")
			}
		})
	}
}

// TestUpdateChecksumMatchesRecompute: the RFC 1624 update of one word
// gives the checksum a full recomputation gives.
func TestUpdateChecksumMatchesRecompute(t *testing.T) {
	b := pkt(t, header.TCPProtocolNumber, "192.0.2.1", "198.51.100.2", 1, 2, 40, false)
	h := header.IPv4(b)
	for _, v := range []uint16{0xbeef, 0, 0xffff, 0x1234} {
		old := h.ID()
		h.SetID(v)
		inc := updateChecksum(h.Checksum(), old, v)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		if got := h.Checksum(); got != inc {
			t.Errorf("ID %#x: incremental %#x, recomputed %#x", v, inc, got)
		}
	}
}
