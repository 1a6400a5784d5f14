package policy

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

func packet(proto uint8, dst string, dport uint16, fragOff uint16) ipv4.Header {
	b := make([]byte, 40)
	ipv4.Header(b).Encode(ipv4.Fields{TotalLen: 40, TTL: 64, Protocol: proto, Src: netip.MustParseAddr("10.10.0.7"), Dst: netip.MustParseAddr(dst)})
	binary.BigEndian.PutUint16(b[6:], fragOff)
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
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
		pkt      ipv4.Header
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
			_, dp, _ := tt.pkt.Ports()
			t.Errorf("%s proto %d -> %v:%d: got %v, want %v", tt.identity, tt.pkt.Protocol(), tt.pkt.Dst(), dp, got, tt.want)
		}
	}
	var nilSet *Set
	if nilSet.For("x").Match(packet(6, "10.20.0.10", 1883, 0)) {
		t.Error("nil set allowed a packet")
	}
}
