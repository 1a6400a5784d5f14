package dataplane

import (
	"encoding/binary"

	"github.com/fleetgate/fleetgate/gateway/config"
	"net/netip"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

type fakeSession struct {
	id     uint64
	ident  string
	addr   netip.Addr
	routes []netip.Prefix
	mtu    int
	mu     sync.Mutex
	got    [][]byte
}

func (f *fakeSession) ID() uint64             { return f.id }
func (f *fakeSession) Identity() string       { return f.ident }
func (f *fakeSession) Addr() netip.Addr       { return f.addr }
func (f *fakeSession) Routes() []netip.Prefix { return f.routes }
func (f *fakeSession) MTU() int               { return f.mtu }
func (f *fakeSession) WritePacket(p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, append([]byte(nil), p...))
	return nil
}

func (f *fakeSession) packets() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.got...)
}

type fakeHost struct {
	mtu int
	mu  sync.Mutex
	got [][]byte
}

func (h *fakeHost) WritePacket(p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, append([]byte(nil), p...))
	return nil
}
func (h *fakeHost) ReadPacket([]byte) (int, error) { select {} }
func (h *fakeHost) MTU() int                       { return h.mtu }
func (h *fakeHost) Close() error                   { return nil }

func (h *fakeHost) packets() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.got...)
}

// pkt builds an IPv4 packet of total length n with a UDP/TCP/ICMP header.
func pkt(t testing.TB, proto uint8, src, dst string, sport, dport uint16, n int, df bool) []byte {
	t.Helper()
	b := make([]byte, n)
	ipv4.Header(b).Encode(ipv4.Fields{TotalLen: uint16(n), ID: 0x1234, DF: df, TTL: 64, Protocol: proto,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)})
	switch proto {
	case ipv4.ProtoUDP:
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], dport)
		binary.BigEndian.PutUint16(b[24:], uint16(n-20))
	case ipv4.ProtoTCP:
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], dport)
		b[32] = 5 << 4
		b[33] = 0x10 // ACK
	case ipv4.ProtoICMP:
		b[20] = uint8(sport)                      // type
		binary.BigEndian.PutUint16(b[24:], dport) // identifier
	}
	return b
}

// tcpSYN builds a SYN with options (MSS first unless pre is given).
func tcpSYN(t testing.TB, src, dst string, mss uint16, pre []byte) []byte {
	t.Helper()
	opts := append(append([]byte{}, pre...), 2, 4, byte(mss>>8), byte(mss))
	for len(opts)%4 != 0 {
		opts = append(opts, 1)
	}
	n := 20 + 20 + len(opts)
	b := make([]byte, n)
	ipv4.Header(b).Encode(ipv4.Fields{TotalLen: uint16(n), DF: true, TTL: 64, Protocol: ipv4.ProtoTCP,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)})
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40001)
	binary.BigEndian.PutUint16(tcp[2:], 1883)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = 0x02
	copy(tcp[20:], opts)
	recomputeTCP(ipv4.Header(b))
	return b
}

func tcpChecksumOK(b []byte) bool {
	h := ipv4.Header(b)
	tcp := h.Payload()
	return ipv4.Checksum(tcp, ipv4.PseudoHeaderSum(h.Src(), h.Dst(), ipv4.ProtoTCP, len(tcp))) == 0
}

func mssOf(b []byte) uint16 {
	tcp := ipv4.Header(b).Payload()
	opts := tcp[20 : int(tcp[12]>>4)*4]
	for i := 0; i < len(opts); {
		if opts[i] == 1 {
			i++
			continue
		}
		if opts[i] == 2 {
			return binary.BigEndian.Uint16(opts[i+2:])
		}
		i += int(opts[i+1])
	}
	return 0
}

func mustConfig(t testing.TB, y string) *config.Config {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
