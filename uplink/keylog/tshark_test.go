package keylog

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/esp"
)

// TestTsharkDecryptsESP seals L2TP Hellos with our SAs for every suite,
// writes them as UDP/4500 packets into a pcap, writes the esp_sa table with
// Open/LogESP into a private Wireshark config dir, and asks tshark to
// decrypt: every packet must show the inner L2TP tunnel ID, pass the ICV
// check, and nothing may be flagged malformed.
func TestTsharkDecryptsESP(t *testing.T) {
	tshark := testenv.RequireBinary(t, "tshark")
	suites := []esp.Suite{
		{Cipher: esp.CipherAESGCM16, KeyBits: 128},
		{Cipher: esp.CipherAESGCM16, KeyBits: 256},
		{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96},
		{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA256_128},
		{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA384_192},
		{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA512_256},
		{Cipher: esp.Cipher3DES, KeyBits: 192, Integ: esp.IntegHMACSHA1_96},
		{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACMD5_96},
	}
	cfg := t.TempDir()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.1")
	pcap := newPcap()
	for i, s := range suites {
		spi := uint32(0x1000 + i)
		km := keymat(s)
		for j := range km {
			km[j] ^= byte(i * 31)
		}
		sa, err := esp.NewSA(s, spi, km, esp.Outbound, esp.Options{AllowLegacy: true})
		if err != nil {
			t.Fatal(err)
		}
		logDst := dst
		switch i % 3 {
		case 1:
			logDst = netip.IPv4Unspecified() // "*": a gateway bound to 0.0.0.0
		case 2:
			// A dual-stack gateway bound to [::] reports "::" as the local
			// address of an IPv4 peer's SA: the line must still say IPv4.
			logDst = netip.IPv6Unspecified()
		}
		if err := w.LogESP(ESPSA{Src: src, Dst: logDst, SPI: spi, Suite: s, Keymat: km}); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 2; k++ {
			pkt, err := sa.Seal(nil, innerUDP(l2tpHello()), esp.NextHeaderUDP)
			if err != nil {
				t.Fatal(err)
			}
			pcap.packet(uint32(i*2+k), ipv4UDP(src, dst, 4500, 4500, pkt))
		}
	}
	// A negative control: an SA logged with the wrong key must not decode.
	bad := suites[2]
	badSA, _ := esp.NewSA(bad, 0x2000, keymat(bad), esp.Outbound, esp.Options{})
	wrong := keymat(bad)
	wrong[0] ^= 1            // encryption key
	wrong[len(wrong)-1] ^= 1 // integrity key
	if err := w.LogESP(ESPSA{Src: src, Dst: dst, SPI: 0x2000, Suite: bad, Keymat: wrong}); err != nil {
		t.Fatal(err)
	}
	pkt, _ := badSA.Seal(nil, innerUDP(l2tpHello()), esp.NextHeaderUDP)
	pcap.packet(100, ipv4UDP(src, dst, 4500, 4500, pkt))
	// The IKEv1 table must load without complaint (decryption of a real
	// Main Mode is the IKE package's interop test).
	if err := w.LogIKEv1([8]byte{1, 2, 3, 4, 5, 6, 7, 8}, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "esp.pcap")
	if err := os.WriteFile(file, pcap.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-n", "-r", file,
		"-o", "esp.enable_encryption_decode:TRUE",
		"-o", "esp.enable_authentication_check:TRUE",
		"-T", "fields", "-E", "separator=|",
		"-e", "esp.spi", "-e", "l2tp.tunnel", "-e", "esp.icv_good", "-e", "_ws.malformed", "-e", "_ws.expert.severity")
	cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+cfg, "HOME="+cfg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	if s := stderr.String(); strings.Contains(strings.ToLower(s), "error") {
		t.Fatalf("tshark complained: %s", s)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2*len(suites)+1 {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), 2*len(suites)+1, out)
	}
	if f := strings.Split(lines[len(lines)-1], "|"); f[1] != "" || f[2] == "1" {
		t.Errorf("SA with a wrong key: tunnel %q icv_good %q, want no L2TP and no good ICV", f[1], f[2])
	}
	for n, line := range lines[:len(lines)-1] {
		f := strings.Split(line, "|")
		s := suites[n/2]
		wantSPI := fmt.Sprintf("0x%08x", 0x1000+n/2)
		if f[0] != wantSPI || f[1] != "4660" {
			t.Errorf("%s packet %d: spi %q tunnel %q, want %s and 4660 (0x1234); line %q", s, n, f[0], f[1], wantSPI, line)
		}
		if s.Integ != esp.IntegNone && f[2] != "1" {
			t.Errorf("%s packet %d: icv_good = %q, want 1", s, n, f[2])
		}
		if f[3] != "" || f[4] != "" {
			t.Errorf("%s packet %d: malformed %q, expert severity %q; want none", s, n, f[3], f[4])
		}
	}
}
