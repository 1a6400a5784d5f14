package suite

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// udpPacket6 builds an IPv6/UDP packet of total size n with a valid UDP
// checksum (mandatory over IPv6, RFC 8200 §8.1).
func udpPacket6(src, dst netip.Addr, dport uint16, n int) []byte {
	b := make([]byte, n)
	b[0], b[6], b[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(b[4:], uint16(n-40))
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	u := b[40:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	putUDPChecksum(src, dst, u)
	return b
}

// benchTUN6 is the tun suite's method by inner family: one session whose
// identity has an IPv6 site prefix (IPV6CP open) on our gateway's vnet
// TUN, fed by a kernel UDP GSO sender in the gateway's namespace with
// 1400-byte IPv4 packets to the session's address and 1400-byte IPv6
// packets to an address of its /64, alternating; and the other way, our
// client's 1400-byte packets of either family through ESP, the router and
// the TUN to a kernel UDP socket of that family in the gateway namespace.
// The outer transport is IPv4 on both rows: the rows differ by what the
// router and the TUN carry.
func benchTUN6(o *Options, rep *Report) {
	const title = "Gateway TUN → ESP forwarding by inner family (kernel UDP GSO sender in the gateway namespace, 1400-byte IP packets, aes128gcm16, vnet driver)"
	const size = 1400
	_, msg, err := runScoped("tun6", func(t testing.TB) {
		if reason := skipReason(func(t testing.TB) { testenv.RequireRoot(t) }); reason != "" {
			t.Skip("TUN and namespaces need root: " + reason)
		}
		topo := netns.Pair(t)
		edge, gwh := topo.Host("a"), topo.Host("b")
		topo.Run("b", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		central6 := netip.MustParseAddr("2001:db8:200::1")
		topo.AddAddr("b", "a", central6.String()+"/64")
		pool, site6 := "10.34.0.0/24", netip.MustParsePrefix("2001:db8:34::/64")
		var tun *dataplane.TUN
		if err := gwh.Do(func() error {
			var err error
			tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg6", Driver: dataplane.TUNDriverVnet, LocalAddr: netip.MustParsePrefix(pool).Addr().Next(),
				Routes: []netip.Prefix{netip.MustParsePrefix(pool), site6}})
			return err
		}); err != nil {
			t.Fatalf("TUN: %v", err)
		}
		ids := fmt.Sprintf("  - {name: s0, ppp: {password: pw}, ipv6_prefix: %q}\n", site6)
		cfg, err := config.Parse("bench.yaml", []byte(strings.Replace(fmt.Sprintf(gwYAML, benchPSK, ids), "10.10.0.0/16", pool, 1)))
		if err != nil {
			t.Fatal(err)
		}
		listen := func() net.PacketConn { return listenIn(t, gwh) }
		eng := engine.New(engine.Config{IKEConn: listen(), NATTConn: listen(), Logger: quietLog})
		g := runGateway(t, cfg, eng, tun)
		cc := g.clientConfig(t, edge, 0, "aes128-sha1-modp2048", "aes128gcm16")
		cc.IPv6 = true
		tn, err := dialTunnel(cc)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { _ = tn.Close() })
		select {
		case <-tn.IPv6Up():
		case <-time.After(30 * time.Second):
			t.Fatal("IPV6CP not up")
		}
		s := newSink()
		tn.SetPacketHandler(func(p []byte) { s.count(len(p)) })
		addr4, addr6 := tn.LocalAddr(), site6.Addr().Next()
		send4 := gsoSender(t, gwh, netip.AddrPortFrom(addr4, 9), size)
		send6 := gsoSender(t, gwh, netip.AddrPortFrom(addr6, 9), size)
		names := []string{"ours IPv4 inside", "ours IPv6 inside"}
		rows := alternate(o.Reps, names, []func() (Sample, error){
			func() (Sample, error) { return loadN(o.Dur, size, s, tunBurst, send4, zeroCPU) },
			func() (Sample, error) { return loadN(o.Dur, size, s, tunBurst, send6, zeroCPU) },
		})
		rep.add(title, "pkts/s", rows)
		rep.ratio(title, "IPv6 / IPv4", rows, names[1], names[0], 0)

		const up = "ESP → gateway TUN by inner family (our client to a kernel UDP socket in the gateway namespace, 1400-byte IP packets, aes128gcm16, vnet driver)"
		pc4, err := gwh.ListenPacket("udp4", netip.AddrPortFrom(gwh.Addr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		pc6, err := gwh.ListenPacket("udp6", netip.AddrPortFrom(central6, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		ks := newSink()
		for _, pc := range []net.PacketConn{pc4, pc6} {
			t.Cleanup(func() { pc.Close() })
			if uc, ok := pc.(*net.UDPConn); ok {
				_ = uc.SetReadBuffer(4 << 20)
			}
			go ks.serve(pc)
		}
		pkt4 := udpPacket(addr4, gwh.Addr, uint16(pc4.LocalAddr().(*net.UDPAddr).Port), size)
		pkt6 := udpPacket6(addr6, central6, uint16(pc6.LocalAddr().(*net.UDPAddr).Port), size)
		upRows := alternate(o.Reps, names, []func() (Sample, error){
			func() (Sample, error) {
				return load(o.Dur, size, ks, func() error { return tn.WritePacket(pkt4) }, zeroCPU)
			},
			func() (Sample, error) {
				return load(o.Dur, size, ks, func() error { return tn.WritePacket(pkt6) }, zeroCPU)
			},
		})
		rep.add(up, "pkts/s", upRows)
		rep.ratio(up, "IPv6 / IPv4", upRows, names[1], names[0], 0)
	})
	if err != nil {
		rep.note("tun6 failed: %v", err)
	} else if msg != "" {
		rep.note("tun6: %s", msg)
	}
}
