package dataplane

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

func writePcap(t *testing.T, path string, pkts ...[]byte) {
	t.Helper()
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(b[4:], 2)
	binary.LittleEndian.PutUint16(b[6:], 4)
	binary.LittleEndian.PutUint32(b[16:], 65535)
	binary.LittleEndian.PutUint32(b[20:], 101) // LINKTYPE_RAW
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

// TestTsharkJudgesRouterOutput has Wireshark check what the router emits:
// a clamped SYN (TCP checksum after the RFC 1624 update), a forwarded
// packet (IP checksum after the TTL decrement), an ICMP fragmentation
// needed (with MTU), and fragments.
func TestTsharkJudgesRouterOutput(t *testing.T) {
	bin := testenv.RequireBinary(t, "tshark")
	f := newFixture(t, false)
	if err := f.r.FromSession(f.hall7, tcpSYN(t, "10.10.0.7", "10.20.0.10", 1460, []byte{1})); err != nil {
		t.Fatal(err)
	}
	if err := f.r.FromHost(pkt(t, ipv4.ProtoUDP, "10.20.0.20", "10.10.9.5", 5683, 5683, 1450, true)); err == nil {
		t.Fatal("oversize DF forwarded")
	}
	if err := f.r.FromHost(pkt(t, ipv4.ProtoUDP, "10.20.0.20", "10.10.9.5", 50000, 50001, 3000, false)); err != nil {
		t.Fatal(err)
	}
	all := append(f.host.packets(), f.pump.packets()...)
	path := filepath.Join(t.TempDir(), "router.pcap")
	writePcap(t, path, all...)
	checks := []string{"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "ip.defragment:TRUE"}
	out, err := exec.Command(bin, append([]string{"-r", path, "-V"}, checks...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"Maximum segment size: 1360 bytes", "Time to Live: 63", "[Header checksum status: Good]",
		"Type: 3 (Destination unreachable)", "Code: 4 (Fragmentation needed)", "MTU of next hop: 1398", "[Reassembled IPv4 length: 2980]"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if strings.Contains(text, "[Checksum Status: Bad]") || strings.Contains(text, "[Header checksum status: Bad]") {
		t.Error("tshark reports a bad checksum")
	}
	mal, err := exec.Command(bin, append([]string{"-r", path, "-Y", "_ws.malformed || _ws.expert.severity >= error"}, checks...)...).Output()
	if err != nil {
		t.Fatalf("tshark filter: %v", err)
	}
	if strings.TrimSpace(string(mal)) != "" {
		t.Errorf("tshark flags packets:\n%s", mal)
	}
	if t.Failed() {
		t.Logf("%s", text)
	}
}
