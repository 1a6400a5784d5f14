package keylog

import (
	"encoding/binary"
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

// ipv6UDP wraps payload in IPv6 and UDP headers, with the UDP checksum
// IPv6 requires (RFC 8200 §8.1).
func ipv6UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	ulen := 8 + len(payload)
	p := make([]byte, 40+ulen)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(ulen))
	p[6], p[7] = 17, 64
	s16, d16 := src.As16(), dst.As16()
	copy(p[8:], s16[:])
	copy(p[24:], d16[:])
	u := p[40:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	copy(u[8:], payload)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(p[8:40])
	sum += uint32(ulen) + 17
	add(u)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return p
}

// TestTsharkDecryptsESPIPv6: SAs over an IPv6 outer network, logged with
// a specific and with a wildcard ([::]) local address, are tagged "IPv6"
// and tshark decrypts their packets to L2TP.
func TestTsharkDecryptsESPIPv6(t *testing.T) {
	tshark := testenv.RequireBinary(t, "tshark")
	suites := []esp.Suite{
		{Cipher: esp.CipherAESGCM16, KeyBits: 128},
		{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA256_128},
	}
	cfg := t.TempDir()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::1")
	pcap := newPcap()
	for i, s := range suites {
		spi := uint32(0x3000 + i)
		km := keymat(s)
		sa, err := esp.NewSA(s, spi, km, esp.Outbound, esp.Options{})
		if err != nil {
			t.Fatal(err)
		}
		logDst := dst
		if i == 1 {
			logDst = netip.IPv6Unspecified()
		}
		if err := w.LogESP(ESPSA{Src: src, Dst: logDst, SPI: spi, Suite: s, Keymat: km}); err != nil {
			t.Fatal(err)
		}
		pkt, err := sa.Seal(nil, innerUDP(l2tpHello()), esp.NextHeaderUDP)
		if err != nil {
			t.Fatal(err)
		}
		pcap.packet(uint32(i), ipv6UDP(src, dst, 4500, 4500, pkt))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(cfg, ESPFile))
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, `"IPv6",`) {
			t.Errorf("esp_sa line for an IPv6 SA: %s", l)
		}
	}
	file := filepath.Join(t.TempDir(), "esp6.pcap")
	if err := os.WriteFile(file, pcap.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-n", "-r", file, "-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE",
		"-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "l2tp.tunnel", "-e", "esp.icv_good", "-e", "_ws.malformed")
	cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+cfg, "HOME="+cfg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(suites) {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), len(suites), out)
	}
	for i, l := range lines {
		f := strings.Split(l, "|")
		if f[0] != fmt.Sprintf("0x%08x", 0x3000+i) || f[1] != "4660" || f[2] != "1" || f[3] != "" {
			t.Errorf("%s: %q, want spi 0x%08x, L2TP tunnel 4660, good ICV, not malformed", suites[i], l, 0x3000+i)
		}
	}
}
