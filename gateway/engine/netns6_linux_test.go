package engine_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// udp6Echo answers IPv6 UDP datagrams arriving over the tunnel for the
// site prefix by swapping addresses and ports (the checksum stays valid).
func udp6Echo(tn *l2tpipsec.Tunnel, site netip.Prefix) func([]byte) {
	return func(p []byte) {
		if len(p) < 48 || p[0]>>4 != 6 || p[6] != 17 || !site.Contains(netip.AddrFrom16([16]byte(p[24:40]))) {
			return
		}
		out := append([]byte(nil), p...)
		copy(out[8:24], p[24:40])
		copy(out[24:40], p[8:24])
		copy(out[40:42], p[42:44])
		copy(out[42:44], p[40:42])
		out[7] = 64
		_ = tn.WritePacket(out)
	}
}

// TestNetnsTUNIPv6: the gateway on its TUN data plane in "gw" with an
// identity holding ipv6_prefix 2001:db8:8::/64; the site's uplink (IPv4
// outer) opens IPV6CP; "central" (2001:db8:200::10, IPv6 only on its link)
// sends 20 UDP datagrams to 2001:db8:8::17 through the kernel's route into
// the TUN, the gateway's router, the tunnel and back: every sequence number
// returns exactly once.
func TestNetnsTUNIPv6(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	topo := netns.New(t, netns.Options{})
	gw, central := topo.Host("gw"), topo.Host("central")
	topo.AddAddr("gw", "central", "2001:db8:200::1/64")
	topo.AddAddr("central", "gw", "2001:db8:200::10/64")
	topo.Run("central", "ip", "-6", "route", "add", "default", "via", "2001:db8:200::1")
	topo.Run("gw", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	site := netip.MustParsePrefix("2001:db8:8::/64")
	cfg := parseConfigPool(t, "10.10.0.0/24", "  - {name: site6, ppp: {password: pw6}, routes: [10.10.9.0/24], ipv6_prefix: \"2001:db8:8::/64\"}\npolicy: {default: allow}\n")
	var tun *dataplane.TUN
	if err := gw.Do(func() error {
		var err error
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: gw.NS,
			Routes: []netip.Prefix{cfg.Pool.PrefixP, site}})
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

	edge := topo.Host("edge")
	tn, _ := dial(t, l2tpipsec.ClientConfig{
		Gateway: netip.AddrPortFrom(gw.Addr, 500).String(), NATTPort: 4500,
		IKEConn: listenIn(t, edge, "0.0.0.0:500"), NATTConn: listenIn(t, edge, "0.0.0.0:4500"),
		PSK:      []byte(testPSK),
		LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte("site6.sites.example")},
		Username: "site6", Password: "pw6", IPv6: true,
	})
	select {
	case <-tn.IPv6Up():
	case <-time.After(20 * time.Second):
		t.Fatalf("IPV6CP not up: %+v", tn.Info())
	}
	tn.SetPacketHandler(udp6Echo(tn, site))
	waitFor(t, "site6 registered", func() bool { return srv.Env().Sessions.Len() == 1 })

	pc, err := central.ListenPacket("udp6", "[2001:db8:200::10]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const n = 20
	dst := &net.UDPAddr{IP: net.ParseIP("2001:db8:8::17"), Port: 7}
	seen := map[uint32]int{}
	buf := make([]byte, 2048)
	for seq := uint32(0); seq < n; seq++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], seq)
		if _, err := pc.WriteTo(b[:], dst); err != nil {
			t.Fatal(err)
		}
	}
	_ = pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(seen) < n {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%d of %d echoes back: %v (router drops %v)", len(seen), n, err, drops(srv))
		}
		if k == 4 && from.(*net.UDPAddr).IP.Equal(dst.IP) {
			seen[binary.BigEndian.Uint32(buf)]++
		}
	}
	for s, c := range seen {
		if s >= n || c != 1 {
			t.Fatalf("sequence %d came back %d times", s, c)
		}
	}
	t.Logf("central ↔ 2001:db8:8::17 over TUN and the tunnel: %d of %d echoed once each; site fe80::%v", len(seen), n, tn.Info().LocalID)
}

func drops(srv *server.Server) map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range dataplane.Reasons() {
		if v := srv.Router().Stats.Drops(r); v > 0 {
			out[r.String()] = v
		}
	}
	return out
}
