package pkttest

import (
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

func TestPackets(t *testing.T) {
	a, b := netip.MustParseAddr("10.10.8.17"), netip.MustParseAddr("10.20.0.1")
	for _, p := range [][]byte{
		UDP(netip.AddrPortFrom(a, 5683), netip.AddrPortFrom(b, 5683), []byte("hi")),
		ICMPEcho(a, b, 7, 3, "fleetgate"),
		Tagged(a, b, 0xdeadbeef, 1400),
	} {
		h := ipv4.Header(p)
		if err := h.Validate(); err != nil {
			t.Fatalf("invalid header: %v", err)
		}
		if h.Src() != a || h.Dst() != b || h.TotalLen() != len(p) || ipv4.Checksum(p[:20], 0) != 0 {
			t.Fatalf("header %x", p[:20])
		}
	}
	if m := ICMPEcho(a, b, 7, 3, "x")[20:]; ipv4.Checksum(m, 0) != 0 || m[0] != 8 {
		t.Fatalf("icmp % x", m)
	}
	if p := Tagged(a, b, 42, 1400); len(p) != 1400 || Tag(p) != 42 {
		t.Fatalf("tagged: len %d tag %d", len(p), Tag(p))
	}
	if p := Tagged(a, b, 42, 0); len(p) != 32 || Tag(p) != 42 {
		t.Fatalf("small tagged: len %d tag %d", len(p), Tag(p))
	}
}
