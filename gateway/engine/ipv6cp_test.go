package engine_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestGatewayIPV6CP: an identity with ipv6_prefix is offered IPV6CP: a
// site asking for IPv6 gets it, with the gateway at fe80::1; an identity
// without one Protocol-Rejects the site's IPV6CP and the link stays up for
// IPv4 (counted on the site). site6's IPv6 packet from its prefix reaches
// the gateway's router, which applies site6's policy (the default: deny)
// and counts the drop.
func TestGatewayIPV6CP(t *testing.T) {
	g := startGateway(t, parseConfig(t, "  - {name: site6, ppp: {password: pw6}, routes: [10.10.9.0/24], ipv6_prefix: \"2001:db8:9::/64\"}\n"), engine.Config{})
	cc := g.clientConfig("site6", "pw6")
	cc.IPv6 = true
	tn, _ := dial(t, cc)
	select {
	case <-tn.IPv6Up():
	case <-time.After(20 * time.Second):
		t.Fatalf("IPV6CP not up: %+v", tn.Info())
	}
	info := tn.Info()
	if !info.IPv6 || info.PeerID != (ppp.IfaceID{7: 1}) || info.LocalID.IsZero() {
		t.Fatalf("site6 info %+v", info)
	}
	t.Logf("site6: fe80::%v, gateway fe80::%v", info.LocalID, info.PeerID)

	waitFor(t, "status shows site6's IPv6 prefix", func() bool {
		for _, e := range g.srv.Report().Sessions {
			if e.Identity == "site6" {
				return e.IPv6Prefix == "2001:db8:9::/64"
			}
		}
		return false
	})

	drops := func() uint64 { return g.srv.Router().Stats.Drops(dataplane.ReasonPolicy) }
	before := drops()
	pkt := make([]byte, 48)
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], 8)
	pkt[6], pkt[7] = 17, 64
	src := info.LocalID.In(netip.MustParsePrefix("2001:db8:9::/64")).As16()
	copy(pkt[8:], src[:])
	dst := netip.MustParseAddr("2001:db8:200::10").As16()
	copy(pkt[24:], dst[:])
	if err := tn.WritePacket(pkt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the IPv6 packet dropped by policy", func() bool { return drops() == before+1 })

	cc4 := g.clientConfig("hall7", "pw7")
	cc4.IPv6 = true
	tn4, _ := dial(t, cc4)
	waitFor(t, "hall7's IPV6CP rejected", func() bool { return tn4.Stats().PPP.IPV6CPRejected.Load() == 1 })
	if tn4.Info().IPv6 {
		t.Fatal("hall7 (no ipv6_prefix) got IPv6")
	}
	select {
	case <-tn4.Done():
		t.Fatalf("hall7's link ended: %v", tn4.Err())
	default:
	}
}
