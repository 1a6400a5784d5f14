package ipv6

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzParse: any bytes: Parse never panics, and on success everything it
// reports lies inside the packet; MSS clamping and the ICMPv6 errors built
// from an accepted packet re-parse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"6000000000081140 20010db8000800000000000000000017 20010db8020000000000000000000010 9c40163300080000",
		"6000000000103c40 20010db8000800000000000000000017 20010db8020000000000000000000010 3c00010400000000 1100000000000000",
		"6000000000102c40 20010db8000800000000000000000017 20010db8020000000000000000000010 1100000100000007 9c40163300080000",
		"6000000000000040 20010db8000800000000000000000017 20010db8020000000000000000000010",
	} {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(1394))
	}
	f.Fuzz(func(t *testing.T, b []byte, mtu uint16) {
		h := header.IPv6(b)
		in, err := Parse(h)
		if err != nil {
			return
		}
		if in.Len > len(b) || in.L4 < header.IPv6MinimumSize || in.L4 > in.Len {
			t.Fatalf("info %+v outside %d bytes", in, len(b))
		}
		ClampMSS(h, in, int(mtu))
		if _, err := Parse(h); err != nil {
			t.Fatalf("clamped packet no longer parses: %v", err)
		}
		p := AppendPacketTooBig(nil, netip.MustParseAddr("fe80::1"), h, in.Len, int(mtu))
		if len(p) > header.IPv6MinimumMTU {
			t.Fatalf("PTB of %d bytes", len(p))
		}
		if pin, err := Parse(p); err != nil || !IsError(p, pin) {
			t.Fatalf("PTB does not parse as an ICMPv6 error: %v", err)
		}
	})
}
