package dataplane

import (
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
	"github.com/fleetgate/fleetgate/gateway/ipv6"
)

// FuzzFromSession feeds arbitrary packets from a session and from the host
// through the router: never a panic, every packet either forwarded or
// counted as a drop, and what reaches the host is valid IPv4 no larger
// than the host MTU.
func FuzzFromSession(f *testing.F) {
	f.Add(pkt(f, ipv4.ProtoTCP, "10.10.0.7", "10.20.0.10", 40000, 1883, 60, true))
	f.Add(tcpSYN(f, "10.10.8.17", "10.20.0.10", 1460, []byte{1}))
	f.Add(pkt(f, ipv4.ProtoUDP, "10.10.8.17", "10.10.9.5", 40000, 5683, 1450, false))
	f.Add(pkt(f, ipv4.ProtoICMP, "10.10.0.7", "10.20.0.20", 0, 77, 28, false))
	f.Fuzz(func(t *testing.T, b []byte) {
		fx := newFixture(t, true)
		in := append([]byte(nil), b...)
		before := fx.r.Stats.FromSessionPackets.Load()
		_ = fx.r.FromSession(fx.hall7, in)
		_ = fx.r.FromHost(append([]byte(nil), b...))
		var drops uint64
		for _, r := range Reasons() {
			drops += fx.r.Stats.Drops(r)
		}
		fwd := fx.r.Stats.ToHostPackets.Load() + fx.r.Stats.ToSessionPackets.Load() + fx.r.Stats.LocalHandled.Load()
		if fx.r.Stats.FromSessionPackets.Load() != before+1 || drops+fwd == 0 {
			t.Fatalf("packet neither forwarded nor counted: drops %d forwarded %d", drops, fwd)
		}
		for _, p := range fx.host.packets() {
			if err := ipv4.Header(p).Validate(); err != nil || len(p) > fx.host.mtu {
				t.Fatalf("host got invalid packet (%v), %d bytes", err, len(p))
			}
		}
	})
}

// FuzzClampMSS checks the clamp never grows a packet's MSS nor breaks a
// valid TCP checksum.
func FuzzClampMSS(f *testing.F) {
	f.Add(tcpSYN(f, "10.10.0.7", "10.20.0.10", 1460, nil), 1400)
	f.Add(tcpSYN(f, "10.10.0.7", "10.20.0.10", 1460, []byte{1, 4, 2}), 1398)
	f.Fuzz(func(t *testing.T, b []byte, mtu int) {
		h := ipv4.Header(b)
		if h.Validate() != nil || h.Protocol() != ipv4.ProtoTCP || len(h.Payload()) < 20 {
			return
		}
		h = h[:h.TotalLen()]
		okBefore := tcpChecksumOK(h)
		if ClampMSS(h, mtu) && okBefore && !tcpChecksumOK(h) {
			t.Fatal("clamping broke a valid TCP checksum")
		}
	})
}

// FuzzRouterIPv6 feeds arbitrary packets through the IPv6 paths (from a
// session with an IPv6 prefix, and from the host): never a panic, every
// packet forwarded or counted, and whatever the router emits (forwarded
// packets, ICMPv6 errors) parses as IPv6 and fits the link it goes to.
func FuzzRouterIPv6(f *testing.F) {
	f.Add(pkt6(site6, central6, nil, ipv6.ProtoUDP, 5683, 20))
	f.Add(syn6(site6, central6, 1440))
	f.Add(pkt6(site6, central6, [][]byte{{ipv6.ProtoFragment, 0, 0, 1, 0, 0, 0, 7}}, ipv6.ProtoUDP, 5683, 8))
	f.Add(pkt6(site6, central6, [][]byte{{ipv6.ProtoHopByHop, 0, 1, 4, 0, 0, 0, 0}, {ipv6.ProtoRouting, 0, 0, 0, 0, 0, 0, 0}}, ipv6.ProtoTCP, 443, 20))
	f.Add(pkt6(central6, site6, nil, ipv6.ProtoUDP, 5683, 1400))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, host, s := newFixture6(t, 1280)
		_ = r.FromSession(s, append([]byte(nil), b...))
		_ = r.FromHost(append([]byte(nil), b...))
		var drops uint64
		for _, why := range Reasons() {
			drops += r.Stats.Drops(why)
		}
		if fwd := r.Stats.ToHostPackets.Load() + r.Stats.ToSessionPackets.Load(); drops+fwd < 2 { // an IPv4 packet may be forwarded as several fragments
			t.Fatalf("2 packets in: %d dropped + %d forwarded", drops, fwd)
		}
		for _, p := range host.packets() {
			if _, err := ipv6.Parse(p); err != nil && p[0]>>4 == 6 || len(p) > host.mtu {
				t.Fatalf("host got a bad packet (%v), %d bytes", err, len(p))
			}
		}
		for _, p := range s.packets() {
			if _, err := ipv6.Parse(p); err != nil && p[0]>>4 == 6 || len(p) > max(s.mtu, ipv6.MinMTU) {
				t.Fatalf("session got a bad packet (%v), %d bytes", err, len(p))
			}
		}
	})
}
