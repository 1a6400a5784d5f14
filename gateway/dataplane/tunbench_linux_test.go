package dataplane

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// BenchmarkTUNFromSession1400 measures the session -> kernel direction
// through a real TUN in a namespace: router (policy, counters, TTL) plus
// one write(2) per 1400-byte packet; the kernel delivers to a UDP socket
// nobody reads (its receive queue overflows and drops, which costs the
// kernel, not us).
func BenchmarkTUNFromSession1400(b *testing.B) {
	testenv.RequireRoot(b)
	h := netns.One(b)
	ns := h.NS
	if out, err := h.Run(context.Background(), "ip", "addr", "add", "10.20.0.10/32", "dev", "lo"); err != nil {
		b.Fatalf("ip addr add: %v %s", err, out)
	}
	sess := &discardSession{fakeSession{id: 1, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"), mtu: 1400}}
	r, _ := benchRouter(b, 0)
	if _, err := r.cfg.Sessions.Add(sess, true); err != nil {
		b.Fatal(err)
	}
	var tun *TUN
	var sink *net.UDPConn
	err := h.Do(func() (err error) {
		tun, err = OpenTUN(TUNConfig{Name: "fg0", LocalAddr: netip.MustParseAddr("10.10.0.1"), NetNS: ns, Routes: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24")}})
		if err != nil {
			return err
		}
		sink, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.20.0.10:9000")))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close(); tun.Close() })
	r.SetHost(tun)
	p := pkt(b, header.UDPProtocolNumber, "10.10.0.7", "10.20.0.10", 5683, 9000, 1400, false)
	b.SetBytes(1400)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p[8] = 64
		if err := r.FromSession(sess, p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
}
