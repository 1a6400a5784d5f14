package l2tpipsec_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// ip6 is a minimal IPv6/UDP packet from src to dst carrying seq at
// offset 48.
func ip6(src, dst netip.Addr, seq uint32) []byte {
	pkt := make([]byte, 52)
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], 12)
	pkt[6], pkt[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(pkt[8:], s[:])
	copy(pkt[24:], d[:])
	binary.BigEndian.PutUint16(pkt[40:], 5683)
	binary.BigEndian.PutUint16(pkt[42:], 5683)
	binary.BigEndian.PutUint16(pkt[44:], 12)
	binary.BigEndian.PutUint32(pkt[48:], seq)
	return pkt
}

// TestIPV6CPThroughTunnel: the whole stack (IKE, ESP, L2TP, PPP over
// in-memory pipes) with a client asking for IPv6 and a gateway whose
// assignment offers it: IPV6CP opens on both ends with the gateway's
// configured identifier, and IPv6 packets cross both ways beside IPv4,
// counted by sequence (none lost, none duplicated). A client that does not
// ask keeps an IPv4-only link.
func TestIPV6CPThroughTunnel(t *testing.T) {
	stacktest.CheckGoroutines(t)
	gwID := ppp.IfaceID{0, 0, 0, 0, 0, 0, 0, 1}
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{RealClock: true,
		Client: func(c *l2tpipsec.ClientConfig) { c.IPv6 = true },
		Server: func(s *l2tpipsec.ServerConfig) {
			s.IfaceID = gwID
			s.AddressFunc = func(context.Context, string) (ppp.Assignment, error) {
				return ppp.Assignment{Addr: l2tpipsectest.ClientAddr, IPv6: true}, nil
			}
		}})
	for _, ch := range []<-chan struct{}{p.Client.IPv6Up(), p.Session.IPv6Up()} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("IPV6CP not up: client %+v server %+v", p.Client.Info(), p.Session.Info())
		}
	}
	ci, si := p.Client.Info(), p.Session.Info()
	if !ci.IPv6 || ci.PeerID != gwID || si.LocalID != gwID || si.PeerID != ci.LocalID {
		t.Fatalf("client %+v server %+v", ci, si)
	}
	site := ci.LocalID.In(netip.MustParsePrefix("2001:db8:8::/64"))
	central := netip.MustParseAddr("2001:db8:200::10")
	const n = 50
	gotC, gotS := make(chan uint32, 2*n), make(chan uint32, 2*n)
	p.Client.SetPacketHandler(func(b []byte) {
		if b[0]>>4 == 6 {
			gotC <- binary.BigEndian.Uint32(b[48:])
		}
	})
	p.Session.SetPacketHandler(func(b []byte) {
		if b[0]>>4 == 6 {
			gotS <- binary.BigEndian.Uint32(b[48:])
		}
	})
	for seq := range uint32(n) {
		if err := p.Client.WritePacket(ip6(site, central, seq)); err != nil {
			t.Fatal(err)
		}
		if err := p.Session.WritePacket(ip6(central, site, seq)); err != nil {
			t.Fatal(err)
		}
	}
	for name, ch := range map[string]chan uint32{"site→gateway": gotS, "gateway→site": gotC} {
		seen := map[uint32]int{}
		for len(seen) < n {
			select {
			case s := <-ch:
				seen[s]++
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: %d of %d IPv6 packets", name, len(seen), n)
			}
		}
		for s, k := range seen {
			if s >= n || k != 1 {
				t.Fatalf("%s: sequence %d seen %d times", name, s, k)
			}
		}
	}
	st := p.Client.Stats().PPP
	if st.PacketsOut6.Load() != n || st.PacketsIn6.Load() != n {
		t.Fatalf("client PPP IPv6 counters: out %d in %d", st.PacketsOut6.Load(), st.PacketsIn6.Load())
	}
	t.Logf("IPV6CP: site fe80::%v, gateway fe80::%v; %d IPv6 packets each way, 0 lost, 0 duplicated", ci.LocalID, si.LocalID, n)

	// IPv4-only client against the same kind of gateway: no IPV6CP, and
	// an IPv6 packet is refused locally.
	q := l2tpipsectest.NewPair(t, l2tpipsectest.Options{RealClock: true})
	if q.Client.Info().IPv6 {
		t.Fatal("IPv4-only client has IPv6")
	}
	if err := q.Client.WritePacket(ip6(site, central, 0)); err == nil {
		t.Fatal("IPv6 packet accepted on an IPv4-only link")
	}
}
