package keylog

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

func keymat(s esp.Suite) []byte {
	k := make([]byte, s.KeymatLen())
	for i := range k {
		k[i] = byte(0x10 + i)
	}
	return k
}

func TestESPLine(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	tests := []struct {
		suite esp.Suite
		want  string
	}{
		{esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96},
			`"IPv4","192.0.2.1","198.51.100.7","0x0000c0de","AES-CBC [RFC3602]","0x101112131415161718191a1b1c1d1e1f","HMAC-SHA-1-96 [RFC2404]","0x202122232425262728292a2b2c2d2e2f30313233"`},
		{esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128},
			`"IPv4","192.0.2.1","198.51.100.7","0x0000c0de","AES-GCM with 16 octet ICV [RFC4106]","0x101112131415161718191a1b1c1d1e1f20212223","NULL",""`},
	}
	for _, tt := range tests {
		got, err := ESPLine(ESPSA{Src: src, Dst: dst, SPI: 0xc0de, Suite: tt.suite, Keymat: keymat(tt.suite)})
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.suite, got, tt.want)
		}
	}
	got, err := ESPLine(ESPSA{Src: src, Dst: netip.IPv4Unspecified(), SPI: 1, Suite: tests[1].suite, Keymat: keymat(tests[1].suite)})
	if err != nil || !strings.HasPrefix(got, `"IPv4","192.0.2.1","*","0x00000001"`) {
		t.Errorf("unspecified destination: %s, %v; want the wildcard", got, err)
	}
	if _, err := ESPLine(ESPSA{Src: src, Dst: dst, Suite: tests[0].suite, Keymat: []byte{1}}); err == nil {
		t.Error("short keymat accepted")
	}
}

func TestIKEv1Line(t *testing.T) {
	got := IKEv1Line([8]byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{0xaa, 0xbb})
	if want := "0102030405060708,aabb"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWriterFilesAndNil(t *testing.T) {
	var nilW *Writer
	if err := nilW.LogIKEv1([8]byte{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := nilW.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 256}
	if err := w.LogESP(ESPSA{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SPI: 1, Suite: s, Keymat: keymat(s)}); err != nil {
		t.Fatal(err)
	}
	if err := w.LogIKEv1([8]byte{9}, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{IKEv1File: "0900000000000000,0102\n", ESPFile: `"IPv6","2001:db8::1","2001:db8::2","0x00000001"`} {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), want) {
			t.Errorf("%s = %q, want prefix %q", name, b, want)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
}

// pcapWriter writes a classic libpcap file with LINKTYPE_RAW (IPv4/IPv6
// packets without a link header).
type pcapWriter struct{ buf bytes.Buffer }

func newPcap() *pcapWriter {
	w := &pcapWriter{}
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 65535)
	binary.LittleEndian.PutUint32(h[20:], 101) // LINKTYPE_RAW
	w.buf.Write(h[:])
	return w
}

func (w *pcapWriter) packet(sec uint32, p []byte) {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], sec)
	binary.LittleEndian.PutUint32(h[8:], uint32(len(p)))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(p)))
	w.buf.Write(h[:])
	w.buf.Write(p)
}

// ipv4UDP wraps payload in IPv4 and UDP headers (UDP checksum 0).
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// innerUDP is the transport-mode ESP payload: UDP 1701→1701 + L2TP.
func innerUDP(l2tp []byte) []byte {
	u := make([]byte, 8+len(l2tp))
	binary.BigEndian.PutUint16(u[0:], 1701)
	binary.BigEndian.PutUint16(u[2:], 1701)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], l2tp)
	return u
}

// l2tpHello is an L2TPv2 control message: Hello (RFC 2661 §6.5) on tunnel 0x1234.
func l2tpHello() []byte {
	return []byte{
		0xc8, 0x02, 0x00, 0x14, // T L S, ver 2; length 20
		0x12, 0x34, 0x00, 0x00, // tunnel, session
		0x00, 0x01, 0x00, 0x01, // Ns, Nr
		0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, // M, len 8, Message Type = Hello
	}
}

func TestLogESPPair(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(nil, &buf)
	s := esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}
	local, remote := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	if err := w.LogESPPair(local, remote, s, 0x10, keymat(s), 0x20, keymat(s)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 ||
		!strings.HasPrefix(lines[0], `"IPv4","198.51.100.2","192.0.2.1","0x00000010"`) ||
		!strings.HasPrefix(lines[1], `"IPv4","192.0.2.1","198.51.100.2","0x00000020"`) {
		t.Fatalf("got:\n%s", buf.String())
	}
	if err := w.LogIKEv1([8]byte{}, nil); err != nil { // no IKE writer: ignored
		t.Fatal(err)
	}
}

// TestESPLineFamily: the protocol column follows the specified addresses;
// an unspecified local address (a socket bound to [::] or 0.0.0.0) does
// not turn an IPv4 SA into an IPv6 one.
func TestESPLineFamily(t *testing.T) {
	s := esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}
	v4, v6 := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8::2")
	for _, tt := range []struct {
		src, dst netip.Addr
		want     string
	}{
		{v4, netip.IPv6Unspecified(), `"IPv4","198.51.100.2","*"`},
		{netip.IPv6Unspecified(), v4, `"IPv4","*","198.51.100.2"`},
		{netip.AddrFrom16(v4.As16()), netip.IPv6Unspecified(), `"IPv4","198.51.100.2","*"`}, // v4-mapped
		{v4, netip.Addr{}, `"IPv4","198.51.100.2","*"`},
		{v6, netip.IPv4Unspecified(), `"IPv6","2001:db8::2","*"`},
		{v6, netip.IPv6Unspecified(), `"IPv6","2001:db8::2","*"`},
		{netip.IPv4Unspecified(), netip.IPv4Unspecified(), `"IPv4","*","*"`},
		{netip.IPv6Unspecified(), netip.Addr{}, `"IPv6","*","*"`},
	} {
		line, err := ESPLine(ESPSA{Src: tt.src, Dst: tt.dst, SPI: 1, Suite: s, Keymat: keymat(s)})
		if err != nil {
			t.Fatalf("%v -> %v: %v", tt.src, tt.dst, err)
		}
		if !strings.HasPrefix(line, tt.want) {
			t.Errorf("%v -> %v: %s, want prefix %s", tt.src, tt.dst, line, tt.want)
		}
	}
	if _, err := ESPLine(ESPSA{Src: v4, Dst: v6, SPI: 1, Suite: s, Keymat: keymat(s)}); err == nil {
		t.Error("an SA between IPv4 and IPv6 addresses was accepted")
	}
}

// TestSetDir: a zero Writer discards; SetDir turns it on (files 0600),
// moves it and turns it off, closing what it had open.
func TestSetDir(t *testing.T) {
	s := esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}
	sa := ESPSA{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.2"), SPI: 7, Suite: s, Keymat: keymat(s)}
	var w Writer
	if err := w.LogESP(sa); err != nil {
		t.Fatal(err)
	}
	a, b := t.TempDir(), t.TempDir()
	lines := func(dir string) int {
		buf, err := os.ReadFile(filepath.Join(dir, ESPFile))
		if err != nil {
			return -1
		}
		return strings.Count(string(buf), "\n")
	}
	for _, step := range []struct {
		dir    string
		wantA  int
		wantB  int
		detail string
	}{
		{a, 1, -1, "on in a"},
		{b, 1, 1, "moved to b"},
		{"", 1, 1, "off"},
	} {
		if err := w.SetDir(step.dir); err != nil {
			t.Fatal(err)
		}
		if err := w.LogESP(sa); err != nil {
			t.Fatal(err)
		}
		if lines(a) != step.wantA || lines(b) != step.wantB {
			t.Fatalf("%s: a has %d lines, b %d; want %d and %d", step.detail, lines(a), lines(b), step.wantA, step.wantB)
		}
	}
	if st, err := os.Stat(filepath.Join(a, ESPFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("esp_sa mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
