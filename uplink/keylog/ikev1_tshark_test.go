package keylog

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// isakmp builds an ISAKMP message (RFC 2408 §3.1) around payload bytes
// whose chain starts with type first.
func isakmp(icookie, rcookie [8]byte, first byte, flags byte, body []byte) []byte {
	h := make([]byte, 28, 28+len(body))
	copy(h[0:], icookie[:])
	copy(h[8:], rcookie[:])
	h[16], h[17], h[18], h[19] = first, 0x10, 2, flags // version 1.0, Identity Protection
	binary.BigEndian.PutUint32(h[24:], uint32(28+len(body)))
	return append(h, body...)
}

// payload is a generic payload header (RFC 2408 §3.2) plus data.
func payload(next byte, data []byte) []byte {
	p := []byte{next, 0, 0, 0}
	binary.BigEndian.PutUint16(p[2:], uint16(4+len(data)))
	return append(p, data...)
}

// phase1SA is an SA payload body (RFC 2407 §4.6.1) with one ISAKMP proposal
// and one transform: AES-CBC-256, SHA1, PSK, MODP 2048 (RFC 2409 App. A).
func phase1SA() []byte {
	attrs := []byte{}
	for _, a := range [][2]uint16{{1, 7}, {14, 256}, {2, 2}, {3, 1}, {4, 14}, {11, 1}, {12, 28800}} {
		attrs = binary.BigEndian.AppendUint16(attrs, 0x8000|a[0])
		attrs = binary.BigEndian.AppendUint16(attrs, a[1])
	}
	transform := payload(0, append([]byte{1, 1, 0, 0}, attrs...)) // #1, KEY_IKE
	proposal := payload(0, append([]byte{1, 1, 0, 1}, transform...))
	return append([]byte{0, 0, 0, 1, 0, 0, 0, 1}, proposal...) // DOI IPsec, SIT_IDENTITY_ONLY
}

// TestTsharkDecryptsIKEv1 writes a synthetic Main Mode (SA, KE+Nonce,
// then an encrypted ID+HASH) into a pcap and checks that tshark, given only
// the ikev1_decryption_table our Writer produced, decrypts message 5: the
// IV is SHA1(g^xi | g^xr) as RFC 2409 Appendix B prescribes and Wireshark
// computes from the KE payloads in the capture.
func TestTsharkDecryptsIKEv1(t *testing.T) {
	tshark := testenv.RequireBinary(t, "tshark")
	icookie := [8]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	rcookie := [8]byte{0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01}
	key := bytes.Repeat([]byte{0x5a}, 32)
	gi, gr := bytes.Repeat([]byte{0x01}, 256), bytes.Repeat([]byte{0x02}, 256)
	ni, nr := bytes.Repeat([]byte{0x03}, 32), bytes.Repeat([]byte{0x04}, 32)
	ini, resp := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.1")

	msgs := [][]byte{
		isakmp(icookie, [8]byte{}, 1, 0, payload(0, phase1SA())),
		isakmp(icookie, rcookie, 1, 0, payload(0, phase1SA())),
		isakmp(icookie, rcookie, 4, 0, append(payload(10, gi), payload(0, ni)...)),
		isakmp(icookie, rcookie, 4, 0, append(payload(10, gr), payload(0, nr)...)),
	}
	// Message 5: ID (IPv4 192.0.2.10, UDP 500) + HASH_I, encrypted.
	plain := append(payload(8, []byte{1, 17, 0x01, 0xf4, 192, 0, 2, 10}), payload(0, bytes.Repeat([]byte{0x77}, 20))...)
	for len(plain)%aes.BlockSize != 0 {
		plain = append(plain, 0)
	}
	ivFull := sha1.Sum(append(append([]byte(nil), gi...), gr...))
	b, _ := aes.NewCipher(key)
	ct := make([]byte, len(plain))
	cipher.NewCBCEncrypter(b, ivFull[:aes.BlockSize]).CryptBlocks(ct, plain)
	msgs = append(msgs, isakmp(icookie, rcookie, 5, 1, ct))

	pcap := newPcap()
	for i, m := range msgs {
		src, dst := ini, resp
		if i%2 == 1 {
			src, dst = resp, ini
		}
		pcap.packet(uint32(i), ipv4UDP(src, dst, 500, 500, m))
	}
	file := filepath.Join(t.TempDir(), "ike.pcap")
	if err := os.WriteFile(file, pcap.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := t.TempDir()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.LogIKEv1(icookie, key); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	run := func(cfgDir string) string {
		t.Helper()
		cmd := exec.Command(tshark, "-n", "-r", file, "-Y", "frame.number == 5",
			"-T", "fields", "-E", "separator=|", "-e", "isakmp.id.data.ipv4_addr", "-e", "isakmp.id.port", "-e", "_ws.malformed")
		cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+cfgDir, "HOME="+cfgDir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, stderr.String())
		}
		if strings.Contains(strings.ToLower(stderr.String()), "error") {
			t.Fatalf("tshark complained: %s", stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	if got, want := run(cfg), "192.0.2.10|500|"; got != want {
		t.Fatalf("tshark with our key log: %q, want %q", got, want)
	}
	// Negative control: without the table the ID stays encrypted.
	if got := run(t.TempDir()); strings.Contains(got, "192.0.2.10") {
		t.Fatalf("tshark decrypted without a key log: %q", got)
	}
}
