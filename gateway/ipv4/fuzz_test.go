package ipv4

import (
	"net/netip"
	"testing"
)

func FuzzHeader(f *testing.F) {
	b := make([]byte, 28)
	Header(b).Encode(Fields{TotalLen: 28, TTL: 64, Protocol: ProtoUDP, Src: netip.MustParseAddr("10.10.0.7"), Dst: netip.MustParseAddr("10.20.0.1")})
	f.Add(b)
	f.Add([]byte{0x46, 0, 0, 24, 0, 0, 0x20, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h := Header(b)
		if h.Validate() != nil {
			return
		}
		_ = h.Payload()
		_, _, _ = h.Ports()
		_ = h.Src()
		_ = h.Dst()
		c := append([]byte(nil), b...)
		Header(c).SetChecksum()
		if Checksum(c[:Header(c).IHL()], 0) != 0 {
			t.Fatal("header checksum does not verify after SetChecksum")
		}
	})
}
