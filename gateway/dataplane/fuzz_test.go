package dataplane

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/ipv6"
)

// FuzzFromSession feeds arbitrary packets from a session and from the host
// through the router: never a panic, every packet either forwarded or
// counted as a drop, and what reaches the host is valid IPv4 no larger
// than the host MTU.
func FuzzFromSession(f *testing.F) {
	f.Add(pkt(f, header.TCPProtocolNumber, "10.10.0.7", "10.20.0.10", 40000, 1883, 60, true))
	f.Add(tcpSYN(f, "10.10.8.17", "10.20.0.10", 1460, []byte{1}))
	f.Add(pkt(f, header.UDPProtocolNumber, "10.10.8.17", "10.10.9.5", 40000, 5683, 1450, false))
	f.Add(pkt(f, header.ICMPv4ProtocolNumber, "10.10.0.7", "10.20.0.20", 0, 77, 28, false))
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
			if !header.IPv4(p).IsValid(len(p)) || len(p) > fx.host.mtu {
				t.Fatalf("host got an invalid packet, %d bytes", len(p))
			}
		}
	})
}

// FuzzHeader checks what the router reads from a header that
// header.IPv4.IsValid accepted (moved with its corpus from gateway/ipv4,
// whose view gVisor's replaced): the payload, addresses, flow key and ICMP
// error test never panic, and a recomputed header checksum verifies.
func FuzzHeader(f *testing.F) {
	f.Add(pkt(f, header.UDPProtocolNumber, "10.10.0.7", "10.20.0.1", 40000, 5683, 28, false))
	f.Add([]byte{0x46, 0, 0, 24, 0, 0, 0x20, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h := header.IPv4(b)
		if !h.IsValid(len(b)) {
			return
		}
		_ = h.Payload()
		_, _ = keyOf(h, true)
		_ = isICMPError(h)
		_, _ = src4(h), dst4(h)
		c := header.IPv4(append([]byte(nil), b...))
		c.SetChecksum(0)
		c.SetChecksum(^c.CalculateChecksum())
		if !c.IsChecksumValid() {
			t.Fatal("header checksum does not verify after recomputing it")
		}
	})
}

// FuzzClampMSS checks the clamp never grows a packet's MSS nor breaks a
// valid TCP checksum.
func FuzzClampMSS(f *testing.F) {
	f.Add(tcpSYN(f, "10.10.0.7", "10.20.0.10", 1460, nil), 1400)
	f.Add(tcpSYN(f, "10.10.0.7", "10.20.0.10", 1460, []byte{1, 4, 2}), 1398)
	f.Fuzz(func(t *testing.T, b []byte, mtu int) {
		h := header.IPv4(b)
		if !h.IsValid(len(b)) || h.TransportProtocol() != header.TCPProtocolNumber || len(h.Payload()) < 20 {
			return
		}
		h = h[:h.TotalLength()]
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
			if _, err := ipv6.Parse(p); err != nil && p[0]>>4 == 6 || len(p) > max(s.mtu, header.IPv6MinimumMTU) {
				t.Fatalf("session got a bad packet (%v), %d bytes", err, len(p))
			}
		}
	})
}
