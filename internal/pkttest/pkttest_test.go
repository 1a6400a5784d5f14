package pkttest

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestPackets(t *testing.T) {
	a, b := netip.MustParseAddr("10.10.8.17"), netip.MustParseAddr("10.20.0.1")
	for _, p := range [][]byte{
		UDP(netip.AddrPortFrom(a, 5683), netip.AddrPortFrom(b, 5683), []byte("hi")),
		ICMPEcho(a, b, 7, 3, "fleetgate"),
		Tagged(a, b, 0xdeadbeef, 1400),
	} {
		h := header.IPv4(p)
		if !h.IsValid(len(p)) {
			t.Fatalf("invalid header % x", p[:20])
		}
		if h.SourceAddress() != tcpip.AddrFrom4(a.As4()) || h.DestinationAddress() != tcpip.AddrFrom4(b.As4()) || int(h.TotalLength()) != len(p) || !h.IsChecksumValid() {
			t.Fatalf("header %x", p[:20])
		}
	}
	if m := ICMPEcho(a, b, 7, 3, "x")[20:]; checksum.Checksum(m, 0) != 0xffff || m[0] != 8 {
		t.Fatalf("icmp % x", m)
	}
	if p := Tagged(a, b, 42, 1400); len(p) != 1400 || Tag(p) != 42 {
		t.Fatalf("tagged: len %d tag %d", len(p), Tag(p))
	}
	if p := Tagged(a, b, 42, 0); len(p) != 32 || Tag(p) != 42 {
		t.Fatalf("small tagged: len %d tag %d", len(p), Tag(p))
	}
}
