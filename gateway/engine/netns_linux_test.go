package engine_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// ip4 writes a 20-byte IPv4 header of b (total length len(b), TTL 64,
// header checksum set).
func ip4(b []byte, proto tcpip.TransportProtocolNumber, src, dst netip.Addr) header.IPv4 {
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	h.SetChecksum(^h.CalculateChecksum())
	return h
}

// echoResponder answers ICMP echo requests arriving over the tunnel for
// the edge's VPN address or anything inside its site prefix, as an edge
// bridge holding endpoint addresses would.
func echoResponder(tn *l2tpipsec.Tunnel, site netip.Prefix) func([]byte) {
	return func(p []byte) {
		h := header.IPv4(p)
		if !h.IsValid(len(p)) || h.TransportProtocol() != header.ICMPv4ProtocolNumber || h.More() || h.FragmentOffset() != 0 {
			return
		}
		if dst := pkttest.Dst(h); dst != tn.LocalAddr() && !site.Contains(dst) {
			return
		}
		m := h.Payload()
		if len(m) < 8 || m[0] != 8 {
			return
		}
		out := make([]byte, h.TotalLength())
		copy(out, p)
		oh := ip4(out, header.ICMPv4ProtocolNumber, pkttest.Dst(h), pkttest.Src(h))
		om := out[oh.HeaderLength():]
		copy(om, m)
		om[0], om[2], om[3] = 0, 0, 0
		c := ^checksum.Checksum(om, 0)
		om[2], om[3] = byte(c>>8), byte(c)
		_ = tn.WritePacket(out)
	}
}

// TestNetnsTUN: the gateway runs with a TUN data plane in "gw"; two edge
// uplink clients behind one nftables NAT ("edge" and "edge2") connect;
// "central" pings each edge's VPN address and an address inside its framed
// route, through the kernel's routing in gw and the TUN.
func TestNetnsTUN(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	testenv.RequireBinary(t, "nft")
	topo := netns.New(t, netns.Options{SecondSite: true})
	gw, central := topo.Host("gw"), topo.Host("central")
	cfg := parseConfigPool(t, "10.10.0.0/24", "  - {name: site2, ppp: {password: pw2}, routes: [10.10.9.0/24]}\npolicy: {default: allow}\n")
	var tun *dataplane.TUN
	if err := gw.Do(func() error {
		var err error
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: gw.NS,
			Routes: []netip.Prefix{cfg.Pool.PrefixP}})
		return err
	}); err != nil {
		t.Fatalf("open TUN in gw: %v", err)
	}
	eng := engine.New(engine.Config{
		IKEConn:  listenIn(t, gw, gw.Addr.String()+":500"),
		NATTConn: listenIn(t, gw, gw.Addr.String()+":4500"),
	})
	srv, err := server.New(cfg, server.Options{Engine: eng, Host: tun})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-eng.Ready()

	sites := []struct {
		host, user, pw string
		site           netip.Prefix
	}{
		{"edge", "hall7", "pw7", netip.MustParsePrefix("10.10.8.0/24")},
		{"edge2", "site2", "pw2", netip.MustParsePrefix("10.10.9.0/24")},
	}
	var tns []*l2tpipsec.Tunnel
	for _, s := range sites {
		h := topo.Host(s.host)
		cc := l2tpipsec.ClientConfig{
			Gateway: netip.AddrPortFrom(gw.Addr, 500).String(), NATTPort: 4500,
			IKEConn: listenIn(t, h, "0.0.0.0:500"), NATTConn: listenIn(t, h, "0.0.0.0:4500"),
			PSK:      []byte(testPSK),
			LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(s.user + ".sites.example")},
			Username: s.user, Password: s.pw,
		}
		tn, _ := dial(t, cc)
		tn.SetPacketHandler(echoResponder(tn, s.site))
		tns = append(tns, tn)
	}
	waitFor(t, "both sessions registered", func() bool { return srv.Env().Sessions.Len() == 2 })
	for i, s := range sites {
		t.Logf("%s: VPN %v, outer as seen by the gateway %v", s.host, tns[i].LocalAddr(), srv.Env().Sessions.Lookup(tns[i].LocalAddr()).(server.Describer).OuterAddr())
		for _, dst := range []netip.Addr{tns[i].LocalAddr(), s.site.Addr().Next().Next().Next()} {
			n, err := central.Ping(dst, 3, 5*time.Second)
			if err != nil || n == 0 {
				t.Fatalf("central ping %v (%s): %d replies, err %v", dst, s.host, n, err)
			}
		}
	}
	// Both sites sit behind the same NAT: one public address, two sessions.
	a := srv.Env().Sessions.Lookup(tns[0].LocalAddr()).(server.Describer).OuterAddr()
	b := srv.Env().Sessions.Lookup(tns[1].LocalAddr()).(server.Describer).OuterAddr()
	if a.Addr() != b.Addr() || a == b {
		t.Fatalf("outer addresses %v and %v: want one NAT address, two ports", a, b)
	}
}
