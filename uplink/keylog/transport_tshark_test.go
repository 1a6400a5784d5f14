package keylog

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/esp"
)

// TestTsharkTransportDatagrams captures what esp.Transport really sends on
// the NAT-T port (an IKE message behind the non-ESP marker, a NAT
// keepalive, ESP carrying the L2TP the PacketConn was given) and has tshark
// dissect and decrypt it: L2TP inside, nothing malformed.
func TestTsharkTransportDatagrams(t *testing.T) {
	tshark := testenv.RequireBinary(t, "tshark")
	clock := stacktest.NewClock()
	tr, err := esp.NewTransport(esp.TransportConfig{NATTAddr: "127.0.0.1:0", Clock: clock,
		IKE: esp.IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })

	suite := esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA256_128}
	km := keymat(suite)
	out, _ := esp.NewSA(suite, 0xabc1, km, esp.Outbound, esp.Options{})
	in, _ := esp.NewSA(suite, 0xabc2, km, esp.Inbound, esp.Options{})
	peer, err := tr.AddSA(in, out, esp.PeerConfig{Remote: sink.LocalAddr().(*net.UDPAddr).AddrPort(), Keepalive: true})
	if err != nil {
		t.Fatal(err)
	}
	var ic, rc [8]byte
	ic[0], rc[0] = 1, 2
	ike := isakmp(ic, rc, 1, 0, payload(0, phase1SA()))
	if err := tr.SendIKE(ike, netip.AddrPort{}, peer.Remote(), true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second) // one keepalive (nothing else sent yet)

	// Outer addresses for the capture: TEST-NET, as if seen on the wire.
	src, dst := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.1")
	pcap := newPcap()
	kinds := map[string]bool{}
	buf := make([]byte, 4096)
	for i := 0; i < 3; i++ {
		if i == 2 {
			// Only now: ESP sent before the keepalive tick would replace it.
			if _, err := tr.L2TP().WriteTo(l2tpHello(), peer.Addr(0)); err != nil {
				t.Fatal(err)
			}
		}
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := sink.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		switch {
		case n == 1:
			kinds["keepalive"] = true
		case n > 4 && buf[0]|buf[1]|buf[2]|buf[3] == 0:
			kinds["ike"] = true
		default:
			kinds["esp"] = true
		}
		pcap.packet(uint32(i), ipv4UDP(src, dst, 4500, 4500, append([]byte(nil), buf[:n]...)))
	}
	if len(kinds) != 3 {
		t.Fatalf("captured %v, want ike, keepalive and esp", kinds)
	}
	file := filepath.Join(t.TempDir(), "natt.pcap")
	if err := os.WriteFile(file, pcap.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	line, err := ESPLine(ESPSA{Src: src, Dst: dst, SPI: 0xabc1, Suite: suite, Keymat: km})
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(tshark, "-n", "-r", file,
		"-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE",
		"-o", "uat:esp_sa:"+line,
		"-T", "fields", "-E", "separator=|",
		"-e", "frame.protocols", "-e", "l2tp.tunnel", "-e", "esp.icv_good", "-e", "_ws.malformed", "-e", "_ws.expert.severity")
	cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+home, "HOME="+home)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	sawL2TP, sawIKE := false, false
	for _, l := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		f := strings.Split(l, "|")
		if f[3] != "" || f[4] != "" {
			t.Errorf("tshark flagged %q", l)
		}
		if strings.Contains(f[0], "isakmp") {
			sawIKE = true
		}
		if strings.Contains(f[0], "esp") {
			if f[1] != "4660" || f[2] != "1" {
				t.Errorf("ESP frame: tunnel %q icv_good %q, want 4660 and 1 (%q)", f[1], f[2], l)
			}
			sawL2TP = f[1] == "4660"
		}
	}
	if !sawL2TP || !sawIKE {
		t.Fatalf("tshark output lacks IKE or decrypted L2TP:\n%s", outb)
	}
}
