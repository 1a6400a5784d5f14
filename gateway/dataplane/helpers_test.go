package dataplane

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
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
func pkt(t testing.TB, proto tcpip.TransportProtocolNumber, src, dst string, sport, dport uint16, n int, df bool) []byte {
	t.Helper()
	b := make([]byte, n)
	var flags uint8
	if df {
		flags = header.IPv4FlagDontFragment
	}
	encode4(b, proto, flags, netip.MustParseAddr(src), netip.MustParseAddr(dst))
	switch proto {
	case header.UDPProtocolNumber:
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], dport)
		binary.BigEndian.PutUint16(b[24:], uint16(n-20))
	case header.TCPProtocolNumber:
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], dport)
		b[32] = 5 << 4
		b[33] = 0x10 // ACK
	case header.ICMPv4ProtocolNumber:
		b[20] = uint8(sport)                      // type
		binary.BigEndian.PutUint16(b[24:], dport) // identifier
	}
	return b
}

// encode4 writes a 20-byte IPv4 header (identification 0x1234, TTL 64,
// total length len(b), checksum set) into b.
func encode4(b []byte, proto tcpip.TransportProtocolNumber, flags uint8, src, dst netip.Addr) {
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), ID: 0x1234, Flags: flags, TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	h.SetChecksum(^h.CalculateChecksum())
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
	encode4(b, header.TCPProtocolNumber, header.IPv4FlagDontFragment, netip.MustParseAddr(src), netip.MustParseAddr(dst))
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40001)
	binary.BigEndian.PutUint16(tcp[2:], 1883)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = 0x02
	copy(tcp[20:], opts)
	recomputeTCP(header.IPv4(b))
	return b
}

func tcpChecksumOK(b []byte) bool {
	h := header.IPv4(b)
	tcp := h.Payload()
	return checksum.Checksum(tcp, header.PseudoHeaderChecksum(header.TCPProtocolNumber, h.SourceAddress(), h.DestinationAddress(), uint16(len(tcp)))) == 0xffff
}

func mssOf(b []byte) uint16 {
	tcp := header.IPv4(b).Payload()
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
