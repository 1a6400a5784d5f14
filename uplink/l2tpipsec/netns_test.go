package l2tpipsec_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// listenIn opens a UDP socket on addr inside host h's namespace.
func listenIn(t *testing.T, h *netns.Host, addr netip.AddrPort) net.PacketConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNetnsTwoSitesBehindOneNAT: two edge hosts behind one nftables
// masquerade dial our server on the standard ports 500/4500 in the gw
// namespace. The server sees both from the NAT's one public address, keeps
// them apart by SA pair (each has its own session, address and packets),
// and one leaving does not disturb the other. tshark finds nothing
// malformed and, with the server's key log, decrypts ESP to L2TP and PPP.
func TestNetnsTwoSitesBehindOneNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "tshark")
	topo := netns.New(t, netns.Options{SecondSite: true})
	gw := topo.Host("gw")
	capture := realpeer.StartCapture(t, gw, "any", "udp port 500 or udp port 4500")
	kdir := t.TempDir()
	kl, err := keylog.Open(kdir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close() })
	sessions := make(chan *l2tpipsec.ServerSession, 4)
	srv, err := l2tpipsec.NewServer(l2tpipsec.ServerConfig{
		KeyLog:        kl,
		IKEConn:       listenIn(t, gw, netip.AddrPortFrom(gw.Addr, 500)),
		NATTConn:      listenIn(t, gw, netip.AddrPortFrom(gw.Addr, 4500)),
		PSK:           func(netip.Addr) ([]byte, bool) { return []byte("netns-psk"), true },
		Authenticator: ppp.LocalUsers{"site1": "pw1", "site2": "pw2"},
		AddressFunc: func(_ context.Context, user string) (ppp.Assignment, error) {
			return ppp.Assignment{Addr: netip.MustParseAddr(map[string]string{"site1": "10.10.8.1", "site2": "10.10.9.1"}[user])}, nil
		},
		LocalAddr: netip.MustParseAddr("10.10.0.1"),
		OnSession: func(s *l2tpipsec.ServerSession) { sessions <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*l2tpipsec.Tunnel, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"edge", "edge2"} {
		h := topo.Host(name)
		cfg := l2tpipsec.ClientConfig{
			Gateway: netip.AddrPortFrom(gw.Addr, 500).String(),
			IKEConn: listenIn(t, h, netip.AddrPortFrom(h.Addr, 0)), NATTConn: listenIn(t, h, netip.AddrPortFrom(h.Addr, 0)),
			PSK:      []byte("netns-psk"),
			LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(fmt.Sprintf("site%d.example", i+1))},
			Username: fmt.Sprintf("site%d", i+1), Password: fmt.Sprintf("pw%d", i+1),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i], errs[i] = l2tpipsec.Dial(ctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("site %d: %v", i+1, err)
		}
		c := clients[i]
		t.Cleanup(func() { c.Close() })
	}
	byUser := map[string]*l2tpipsec.ServerSession{}
	for len(byUser) < 2 {
		select {
		case s := <-sessions:
			byUser[s.Username()] = s
		case <-ctx.Done():
			t.Fatal("server sessions missing")
		}
	}
	s1, s2 := byUser["site1"], byUser["site2"]
	nat := topo.Host("nat").Addr
	if s1.Outer().Addr() != nat || s2.Outer().Addr() != nat || s1.Outer() == s2.Outer() {
		t.Fatalf("outer addresses %v and %v, want two ports of the NAT's %v", s1.Outer(), s2.Outer(), nat)
	}
	t.Logf("site1 from %v as %v, site2 from %v as %v", s1.Outer(), s1.Addr(), s2.Outer(), s2.Addr())
	for i, ss := range []*l2tpipsec.ServerSession{s1, s2} {
		got := make(collector, 64)
		clients[i].SetPacketHandler(got.handle)
		other := make(collector, 64)
		clients[1-i].SetPacketHandler(other.handle)
		for k := 0; k < 20; k++ {
			if err := ss.WritePacket(pkttest.Tagged(netip.MustParseAddr("10.10.0.1"), ss.Addr(), uint32(k), 500)); err != nil {
				t.Fatal(err)
			}
		}
		got.expect(t, fmt.Sprintf("site %d", i+1), 20)
		if len(other) != 0 {
			t.Fatalf("site %d received site %d's packets", 2-i, i+1)
		}
	}
	clients[0].Close()
	<-s1.Done()
	got := make(collector, 4)
	clients[1].SetPacketHandler(got.handle)
	if err := s2.WritePacket(pkttest.Tagged(netip.MustParseAddr("10.10.0.1"), s2.Addr(), 7, 100)); err != nil {
		t.Fatal(err)
	}
	got.expect(t, "site 2 after site 1 left", 1)
	clients[1].Close()

	// tshark judges what our client and server sent through the NAT and,
	// with the server's key log, decrypts ESP down to PPP.
	pcap := capture.Stop()
	if bad := realpeer.Malformed(t, pcap); len(bad) > 0 {
		t.Errorf("tshark flags %d packets:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	opts := []string{"-o", "esp.enable_encryption_decode:TRUE"}
	for _, f := range []string{keylog.IKEv1File, keylog.ESPFile} {
		b, err := os.ReadFile(filepath.Join(kdir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				opts = append(opts, "-o", "uat:"+f+":"+l)
			}
		}
	}
	sum := realpeer.Summary(t, pcap, opts...)
	for _, want := range []string{"L2TP", "LCP", "CHAP", "IPCP"} {
		if !strings.Contains(sum, want) {
			t.Errorf("decrypted capture lacks %s:\n%s", want, sum)
		}
	}
	if bad := realpeer.Malformed(t, pcap, opts...); len(bad) > 0 {
		t.Errorf("decrypted, tshark flags %d packets:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}
