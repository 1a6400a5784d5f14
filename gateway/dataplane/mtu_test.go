package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

func TestEffectiveMTU(t *testing.T) {
	tests := []struct {
		suite     esp.Suite
		path, max int
		want      int
	}{
		{esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}, 1500, 0, 1414},
		{esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 256}, 1500, 1400, 1400},
		{esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96}, 1500, 0, 1398},
		{esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA256_128}, 1500, 0, 1398},
		{esp.Suite{Cipher: esp.Cipher3DES, KeyBits: 192, Integ: esp.IntegHMACSHA1_96}, 0, 0, 1414},
		{esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96}, 600, 0, MinMTU},
	}
	for _, tt := range tests {
		if got := EffectiveMTU(tt.suite, tt.path, tt.max); got != tt.want {
			t.Errorf("EffectiveMTU(%v, %d, %d) = %d, want %d", tt.suite, tt.path, tt.max, got, tt.want)
		}
	}
	// Cross-check the GCM figure by hand: a 1414-byte inner packet with the
	// worst-case L2TP/PPP headers is exactly a 1500-byte outer packet.
	inner := 1414 + pppHeaderMax + l2tpDataMax + l2tpUDP
	padded := (inner + espTrailer + 3) &^ 3
	if outer := outerIPv4 + nattUDP + espHeader + 8 + padded + 16; outer != 1500 {
		t.Errorf("GCM outer size for MTU 1414: got %d, want 1500", outer)
	}
}

// TestEffectiveMTUOverIPv6: an IPv6 outer header is 20 bytes more than
// IPv4's: 1394 for GCM at 1500 (20 less), 1382 for CBC (16 less: CBC pads
// to 16-byte blocks, so the loss is rounded to a block); a v4-mapped outer
// address is IPv4.
func TestEffectiveMTUOverIPv6(t *testing.T) {
	gcm := esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}
	cbc := esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96}
	v6, v4, mapped := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("::ffff:192.0.2.2")
	for _, tt := range []struct {
		s    esp.Suite
		a    netip.Addr
		want int
	}{{gcm, v6, 1394}, {cbc, v6, 1382}, {gcm, v4, 1414}, {cbc, v4, 1398}, {gcm, mapped, 1414}} {
		if got := EffectiveMTUOver(tt.s, tt.a, 1500, 0); got != tt.want {
			t.Errorf("EffectiveMTUOver(%v, %v) = %d, want %d", tt.s, tt.a, got, tt.want)
		}
	}
	// Cross-check by hand: a 1394-byte inner packet over IPv6 with GCM is
	// exactly a 1500-byte outer packet, and 1395 would not fit.
	for inner, want := range map[int]int{1394: 1500, 1395: 1504} {
		n := inner + pppHeaderMax + l2tpDataMax + l2tpUDP
		padded := (n + espTrailer + 3) &^ 3
		if outer := outerIPv6 + nattUDP + espHeader + 8 + padded + 16; outer != want {
			t.Errorf("GCM IPv6 outer size for inner %d: got %d, want %d", inner, outer, want)
		}
	}
}

func TestClampMSS(t *testing.T) {
	tests := []struct {
		name    string
		pkt     []byte
		mtu     int
		changed bool
		wantMSS uint16
	}{
		{"syn 1460 to 1400", tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, nil), 1400, true, 1360},
		{"syn already small", tcpSYN(t, "10.10.0.7", "10.20.0.10", 1200, nil), 1400, false, 1200},
		{"mss at odd offset", tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, []byte{1}), 1398, true, 1358},
		{"mss after sack-permitted", tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, []byte{4, 2}), 1414, true, 1374},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClampMSS(header.IPv4(tt.pkt), tt.mtu); got != tt.changed {
				t.Errorf("changed: got %v, want %v", got, tt.changed)
			}
			if got := mssOf(tt.pkt); got != tt.wantMSS {
				t.Errorf("MSS: got %d, want %d", got, tt.wantMSS)
			}
			if !tcpChecksumOK(tt.pkt) {
				t.Error("TCP checksum wrong after clamping")
			}
		})
	}
	ack := pkt(t, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 1, 2, 60, true)
	before := append([]byte(nil), ack...)
	if ClampMSS(header.IPv4(ack), 500) || !bytes.Equal(ack, before) {
		t.Error("non-SYN packet modified")
	}
	bad := tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, nil)
	bad[20+20+1] = 0 // option length 0: must not loop or clamp
	if ClampMSS(header.IPv4(bad), 1000) {
		t.Error("malformed option clamped")
	}
}

func TestFragmentReassembles(t *testing.T) {
	orig := pkt(t, header.UDPProtocolNumber, "10.20.0.1", "10.10.8.17", 5683, 5683, 3000, false)
	for i := 28; i < len(orig); i++ {
		orig[i] = byte(i)
	}
	var frags [][]byte
	if err := Fragment(header.IPv4(orig), 1400, func(f []byte) error { frags = append(frags, append([]byte(nil), f...)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(frags) != 3 {
		t.Fatalf("got %d fragments, want 3", len(frags))
	}
	payload := make([]byte, 0, len(orig))
	for i, f := range frags {
		h := header.IPv4(f)
		if !h.IsValid(len(f)) || len(f) > 1400 || checksum.Checksum(f[:20], 0) != 0xffff {
			t.Fatalf("fragment %d: len %d, invalid or bad checksum", i, len(f))
		}
		ff := binary.BigEndian.Uint16(f[6:])
		if mf := ff&0x2000 != 0; mf != (i < 2) {
			t.Errorf("fragment %d: MF %v", i, mf)
		}
		if off := int(ff&0x1fff) * 8; off != len(payload) {
			t.Errorf("fragment %d: offset %d, want %d", i, off, len(payload))
		}
		payload = append(payload, h.Payload()...)
	}
	if !bytes.Equal(payload, orig[20:]) {
		t.Error("reassembled payload differs")
	}
}
