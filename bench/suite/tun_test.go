package suite

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestTunArithmetic: the tun note's figures follow from the three sides'
// CPU per packet, and a side without a CPU figure gives no note.
func TestTunArithmetic(t *testing.T) {
	row := func(name string, us float64) Row {
		return Row{Name: name, Median: Sample{Rate: 1, CPUPerOp: time.Duration(us * 1000)}}
	}
	got := tunArithmetic([]Row{row("v", 3.2), row("w", 5), row("c", 2.4)}, "v", "w", "c")
	for _, want := range []string{"(the TUN ceiling) 2.40", "adds 0.80", "= 3.20", "water adds 2.60", "= 5.00", "by CPU = 1.56", "at zero 2.08", "2x needs vnet <= 2.50: vnet's own work <= 0.10 (today 0.80)"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
	if got := tunArithmetic([]Row{row("v", 3), row("w", 4), row("c", 2.5)}, "v", "w", "c"); !strings.Contains(got, "out of reach") {
		t.Errorf("2x below the ceiling not called out of reach: %q", got)
	}
	if got := tunArithmetic([]Row{row("v", 3), row("w", 5)}, "v", "w", "c"); got != "" {
		t.Errorf("note without a ceiling figure: %q", got)
	}
}

// TestUDPPacketChecksum: the bench's datagrams carry a UDP checksum that a
// receiver verifies (gVisor's check here; GRO in the kernel and in the vnet
// TUN coalesces only such datagrams), for even and odd sizes and both
// families.
func TestUDPPacketChecksum(t *testing.T) {
	for _, n := range []int{64, 200, 1397, 1400} {
		b := udpPacket(netip.MustParseAddr("10.33.0.9"), netip.MustParseAddr("198.51.100.2"), 7000, n)
		ip := header.IPv4(b)
		if !ip.IsChecksumValid() {
			t.Errorf("%d bytes: IPv4 header checksum invalid", n)
		}
		u := header.UDP(ip.Payload())
		if u.Checksum() == 0 || !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
			t.Errorf("%d bytes: UDP checksum %#04x invalid", n, u.Checksum())
		}
		b6 := udpPacket6(netip.MustParseAddr("fd00::9"), netip.MustParseAddr("fd00::2"), 7000, n)
		ip6 := header.IPv6(b6)
		u6 := header.UDP(ip6.Payload())
		if !u6.IsChecksumValid(ip6.SourceAddress(), ip6.DestinationAddress(), checksum.Checksum(u6.Payload(), 0)) {
			t.Errorf("%d bytes: IPv6 UDP checksum %#04x invalid", n, u6.Checksum())
		}
	}
}
