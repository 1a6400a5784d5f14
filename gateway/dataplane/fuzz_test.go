package dataplane

import (
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
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
