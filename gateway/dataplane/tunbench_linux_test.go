package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// BenchmarkTUNFromSession1400 measures the session -> kernel direction
// through a real TUN in a namespace: router (policy, counters, TTL) plus
// one write(2) per 1400-byte packet; the kernel delivers to a UDP socket
// nobody reads (its receive queue overflows and drops, which costs the
// kernel, not us).
func BenchmarkTUNFromSession1400(b *testing.B) {
	testenv.RequireRoot(b)
	ns := fmt.Sprintf("fgbn%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	_ = exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	_ = exec.Command("ip", "-n", ns, "addr", "add", "10.20.0.10/32", "dev", "lo").Run()
	sess := &discardSession{fakeSession{id: 1, ident: "hall7", addr: netip.MustParseAddr("10.10.0.7"), mtu: 1400}}
	r, _ := benchRouter(b, 0)
	if _, err := r.cfg.Sessions.Add(sess, true); err != nil {
		b.Fatal(err)
	}
	var tun *TUN
	var sink *net.UDPConn
	inNetns(b, ns, func() {
		var err error
		tun, err = OpenTUN(TUNConfig{Name: "fg0", LocalAddr: netip.MustParseAddr("10.10.0.1"), NetNS: ns, Routes: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24")}})
		if err != nil {
			b.Fatal(err)
		}
		sink, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.20.0.10:9000")))
		if err != nil {
			b.Fatal(err)
		}
	})
	b.Cleanup(func() { sink.Close(); tun.Close() })
	r.SetHost(tun)
	p := pkt(b, ipv4.ProtoUDP, "10.10.0.7", "10.20.0.10", 5683, 9000, 1400, false)
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
