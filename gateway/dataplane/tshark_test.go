package dataplane

import (
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestTsharkJudgesRouterOutput has Wireshark check what the router emits:
// a clamped SYN (TCP checksum after the RFC 1624 update), a forwarded
// packet (IP checksum after the TTL decrement), an ICMP fragmentation
// needed (with MTU), and fragments.
func TestTsharkJudgesRouterOutput(t *testing.T) {
	f := newFixture(t, false)
	if err := f.r.FromSession(f.hall7, tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, []byte{1})); err != nil {
		t.Fatal(err)
	}
	if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.9.5", 5683, 5683, 1450, true)); err == nil {
		t.Fatal("oversize DF forwarded")
	}
	if err := f.r.FromHost(pkt(t, header.UDPProtocolNumber, "10.20.0.20", "10.10.9.5", 50000, 50001, 3000, false)); err != nil {
		t.Fatal(err)
	}
	all := append(f.host.packets(), f.pump.packets()...)
	path := realpeer.WritePcap(t, all...)
	checks := []string{"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "ip.defragment:TRUE"}
	text := realpeer.Decode(t, path, "", checks...)
	for _, want := range []string{"Maximum segment size: 1360 bytes", "Time to Live: 63", "[Header checksum status: Good]",
		"Type: 3 (Destination unreachable)", "Code: 4 (Fragmentation needed)", "MTU of next hop: 1398", "[Reassembled IPv4 length: 2980]"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if strings.Contains(text, "[Checksum Status: Bad]") || strings.Contains(text, "[Header checksum status: Bad]") {
		t.Error("tshark reports a bad checksum")
	}
	if mal := realpeer.Lines(t, path, "_ws.malformed || _ws.expert.severity >= error", checks...); len(mal) > 0 {
		t.Errorf("tshark flags packets:\n%s", strings.Join(mal, "\n"))
	}
	if t.Failed() {
		t.Logf("%s", text)
	}
}
