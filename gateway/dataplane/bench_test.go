package dataplane

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
)

type discardSession struct{ fakeSession }

func (d *discardSession) WritePacket([]byte) error { return nil }

type discardHost struct{}

func (discardHost) WritePacket([]byte) error       { return nil }
func (discardHost) ReadPacket([]byte) (int, error) { select {} }
func (discardHost) MTU() int                       { return 1500 }
func (discardHost) Close() error                   { return nil }

func benchRouter(b *testing.B, n int) (*Router, []*discardSession) {
	b.Helper()
	tb := route.NewTable()
	var ss []*discardSession
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, 10, byte(i >> 8), byte(i)})
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>8), byte(i), 0}), 24)
		s := &discardSession{fakeSession{id: uint64(i + 1), ident: a.String(), addr: a, routes: []netip.Prefix{p}, mtu: 1400}}
		if _, err := tb.Add(s, true); err != nil {
			b.Fatal(err)
		}
		ss = append(ss, s)
	}
	// Allow-all policy: measure forwarding, not denial.
	r := New(Config{Sessions: tb, Policies: policy.Compile(mustConfig(b, "psk: {shared: x}\npolicy: {default: allow}\n")), LocalAddr: netip.MustParseAddr("10.10.255.254")})
	r.SetHost(discardHost{})
	return r, ss
}

// BenchmarkFromSession1400 forwards 1400-byte UDP packets from one of 1000
// sessions to the host (policy, anti-spoofing, TTL, counters).
func BenchmarkFromSession1400(b *testing.B) {
	r, ss := benchRouter(b, 1000)
	s := ss[500]
	p := pkt(b, header.UDPProtocolNumber, "10.101.244.17", "10.20.0.10", 5683, 5683, 1400, false)
	b.SetBytes(1400)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p[8] = 64 // restore TTL (the router decrements it in place)
		if err := r.FromSession(s, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFromHost1400 routes 1400-byte packets from the host to one of
// 1000 sessions by longest prefix (framed route).
func BenchmarkFromHost1400(b *testing.B) {
	r, _ := benchRouter(b, 1000)
	p := pkt(b, header.UDPProtocolNumber, "10.20.0.10", "10.101.244.17", 5683, 5683, 1400, false)
	b.SetBytes(1400)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p[8] = 64
		if err := r.FromHost(p); err != nil {
			b.Fatal(err)
		}
	}
}

type discardSession6 struct {
	discardSession
	pfx netip.Prefix
}

func (d *discardSession6) IPv6Prefix() netip.Prefix { return d.pfx }

// benchRouter6 is benchRouter with IPv6: n sessions, session i owning
// 2001:db8:<i>::/64.
func benchRouter6(b *testing.B, n int) (*Router, []*discardSession6) {
	b.Helper()
	tb := route.NewTable()
	var ss []*discardSession6
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, 10, byte(i >> 8), byte(i)})
		p6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 64)
		s := &discardSession6{discardSession{fakeSession{id: uint64(i + 1), ident: a.String(), addr: a, mtu: 1400}}, p6}
		if _, err := tb.Add(s, true); err != nil {
			b.Fatal(err)
		}
		ss = append(ss, s)
	}
	r := New(Config{Sessions: tb, Policies: policy.Compile(mustConfig(b, "psk: {shared: x}\npolicy: {default: allow}\n")), LocalAddr: netip.MustParseAddr("10.10.255.254")})
	r.SetHost(discardHost{})
	return r, ss
}

// BenchmarkFromSession1400IPv6 is BenchmarkFromSession1400 for IPv6
// (Parse with its extension header walk, prefix anti-spoofing, policy,
// MSS check, hop limit).
func BenchmarkFromSession1400IPv6(b *testing.B) {
	r, ss := benchRouter6(b, 1000)
	s := ss[500]
	p := pkt6(s.pfx.Addr().Next(), netip.MustParseAddr("2001:db8:ffff::10"), nil, 17, 5683, 1400-40)
	b.SetBytes(1400)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p[7] = 64 // restore the hop limit
		if err := r.FromSession(s, p); err != nil {
			for _, why := range Reasons() {
				if r.Stats.Drops(why) > 0 {
					b.Fatalf("%v: dropped as %s", err, why)
				}
			}
			b.Fatal(err)
		}
	}
}

// BenchmarkFromHost1400IPv6 routes 1400-byte IPv6 packets from the host to
// one of 1000 sessions by its /64.
func BenchmarkFromHost1400IPv6(b *testing.B) {
	r, ss := benchRouter6(b, 1000)
	p := pkt6(netip.MustParseAddr("2001:db8:ffff::10"), ss[500].pfx.Addr().Next(), nil, 17, 5683, 1400-40)
	b.SetBytes(1400)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p[7] = 64
		if err := r.FromHost(p); err != nil {
			b.Fatal(err)
		}
	}
}
