package policy

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/internal/pkttest"
)

// packet is a 40-byte IPv4 packet of proto with destination port dport
// (TCP, UDP) and the raw flags/fragment-offset word fragOff.
func packet(proto uint8, dst string, dport uint16, fragOff uint16) header.IPv4 {
	b := pkttest.UDP(netip.AddrPortFrom(netip.MustParseAddr("10.10.0.7"), 40000), netip.AddrPortFrom(netip.MustParseAddr(dst), dport), make([]byte, 12))
	h := header.IPv4(b)
	b[9] = proto
	binary.BigEndian.PutUint16(b[6:], fragOff)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
	return h
}

func TestCompileAndMatch(t *testing.T) {
	c, err := config.Parse("t.yaml", []byte(`
psk: {shared: x}
policy: {default: deny}
policies:
  sensors:
    allow:
      - {dst: 10.20.0.10/32, proto: tcp, ports: [1883, 8883]}
      - {dst: 10.20.0.20/32, proto: udp, ports: ["5683-5684"]}
      - {dst: 10.20.0.0/16, proto: icmp}
  open: {default: allow}
identities:
  - {name: hall7, ppp: {password: p}, policy: sensors}
  - {name: ops, ppp: {password: p}, policy: open}
  - {name: plain, ppp: {password: p}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := Compile(c)
	tests := []struct {
		identity string
		pkt      header.IPv4
		want     bool
	}{
		{"hall7", packet(6, "10.20.0.10", 1883, 0), true},
		{"hall7", packet(6, "10.20.0.10", 8883, 0), true},
		{"hall7", packet(6, "10.20.0.10", 22, 0), false},
		{"hall7", packet(17, "10.20.0.10", 1883, 0), false},
		{"hall7", packet(17, "10.20.0.20", 5684, 0), true},
		{"hall7", packet(17, "10.20.0.20", 5685, 0), false},
		{"hall7", packet(1, "10.20.9.9", 0, 0), true},
		{"hall7", packet(1, "10.30.0.1", 0, 0), false},
		{"hall7", packet(6, "10.20.0.10", 22, 0x0010), true}, // non-first fragment: dst+proto only
		{"ops", packet(6, "192.0.2.1", 22, 0), true},
		{"plain", packet(6, "10.20.0.10", 1883, 0), false},
		{"radius-only-user", packet(6, "10.20.0.10", 1883, 0), false},
	}
	for _, tt := range tests {
		if got := s.For(tt.identity).Match(tt.pkt); got != tt.want {
			t.Errorf("%s proto %d -> %v:%d: got %v, want %v", tt.identity, tt.pkt.Protocol(), pkttest.Dst(tt.pkt), binary.BigEndian.Uint16(tt.pkt[22:]), got, tt.want)
		}
	}
	var nilSet *Set
	if nilSet.For("x").Match(packet(6, "10.20.0.10", 1883, 0)) {
		t.Error("nil set allowed a packet")
	}
}
