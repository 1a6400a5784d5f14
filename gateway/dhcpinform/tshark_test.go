package dhcpinform

import (
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// writePcap writes raw IPv4 packets as a pcap file (LINKTYPE_RAW, 101).
func writePcap(t *testing.T, path string, pkts ...[]byte) {
	t.Helper()
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(b[4:], 2)
	binary.LittleEndian.PutUint16(b[6:], 4)
	binary.LittleEndian.PutUint32(b[16:], 65535)
	binary.LittleEndian.PutUint32(b[20:], 101)
	for i, p := range pkts {
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(1700000000+i))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(p)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(p)))
		b = append(append(b, rec...), p...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTsharkDissectsAck has Wireshark's DHCP dissector judge our INFORM
// fixture and our ACK: message types, routes in options 121 and 249, and
// nothing malformed.
func TestTsharkDissectsAck(t *testing.T) {
	bin := testenv.RequireBinary(t, "tshark")
	inform := windowsInform(t, nil)
	ack, ok, err := Respond(inform, Reply{ServerID: netip.MustParseAddr("10.10.0.1"),
		Routes: []Route{{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParseAddr("10.10.0.1")}, {netip.MustParsePrefix("10.10.8.0/24"), netip.MustParseAddr("10.10.0.1")}},
		DNS:    []netip.Addr{netip.MustParseAddr("10.20.0.53")}})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	path := filepath.Join(t.TempDir(), "dhcp.pcap")
	writePcap(t, path, inform, ack)
	checks := []string{"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}
	out, err := exec.Command(bin, append([]string{"-r", path, "-V"}, checks...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"DHCP: Inform (8)", "DHCP: ACK (5)", "(121) Classless Static Route", "(249) Private/Classless Static Route (Microsoft)",
		"10.20.0.0/16-10.10.0.1", "10.10.8.0/24-10.10.0.1", "Domain Name Server: 10.20.0.53", "[Header checksum status: Good]", "[Checksum Status: Good]"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	mal, err := exec.Command(bin, append([]string{"-r", path, "-Y", "_ws.malformed || _ws.expert.severity >= warning"}, checks...)...).Output()
	if err != nil {
		t.Fatalf("tshark filter: %v\n%s", err, mal)
	}
	if strings.TrimSpace(string(mal)) != "" {
		t.Errorf("tshark flags malformed/warning packets:\n%s", mal)
	}
	if t.Failed() {
		t.Logf("tshark -V:\n%s", text)
	}
}
