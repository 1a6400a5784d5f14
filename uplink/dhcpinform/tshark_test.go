package dhcpinform

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestTsharkDissectsAck has Wireshark's DHCP dissector judge our INFORM
// fixture and our ACK: message types, routes in options 121 and 249, and
// nothing malformed.
func TestTsharkDissectsAck(t *testing.T) {
	inform := windowsInform(t, nil)
	ack, ok, err := Respond(inform, Reply{ServerID: netip.MustParseAddr("10.10.0.1"),
		Routes: []Route{{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParseAddr("10.10.0.1")}, {netip.MustParsePrefix("10.10.8.0/24"), netip.MustParseAddr("10.10.0.1")}},
		DNS:    []netip.Addr{netip.MustParseAddr("10.20.0.53")}})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	path := realpeer.WritePcap(t, inform, ack)
	checks := []string{"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}
	text := realpeer.Decode(t, path, "", checks...)
	for _, want := range []string{"DHCP: Inform (8)", "DHCP: ACK (5)", "(121) Classless Static Route", "(249) Private/Classless Static Route (Microsoft)",
		"10.20.0.0/16-10.10.0.1", "10.10.8.0/24-10.10.0.1", "Domain Name Server: 10.20.0.53", "[Header checksum status: Good]", "[Checksum Status: Good]"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if mal := realpeer.Lines(t, path, "_ws.malformed || _ws.expert.severity >= warning", checks...); len(mal) > 0 {
		t.Errorf("tshark flags malformed/warning packets:\n%s", strings.Join(mal, "\n"))
	}
	if t.Failed() {
		t.Logf("tshark -V:\n%s", text)
	}
}
