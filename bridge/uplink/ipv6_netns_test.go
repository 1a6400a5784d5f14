package uplink

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// nsGateway runs a tunnel server in host gw on one wildcard socket per
// port, opened as the gateway daemon opens them for its default
// listen.address (net.ListenUDP("udp", 0.0.0.0:port): on Linux an
// AF_INET6 socket that takes IPv4 and IPv6 alike).
func nsGateway(t *testing.T, gw *netns.Host, sessions chan *l2tpipsec.ServerSession) {
	t.Helper()
	listen := func(port string) net.PacketConn {
		c, err := gw.ListenPacket("udp", "0.0.0.0:"+port)
		if err != nil {
			t.Fatalf("listen in %s: %v", gw.Name, err)
		}
		return c
	}
	srv, err := l2tpipsec.NewServer(l2tpipsec.ServerConfig{
		IKEConn: listen("500"), NATTConn: listen("4500"),
		PSK:           func(netip.Addr) ([]byte, bool) { return []byte("uplink-psk"), true },
		Authenticator: ppp.LocalUsers{"site1": "pw1"},
		AddressFunc: func(context.Context, string) (ppp.Assignment, error) {
			return ppp.Assignment{Addr: netip.MustParseAddr("10.10.8.1")}, nil
		},
		LocalAddr: netip.MustParseAddr("10.10.0.1"),
		OnSession: func(s *l2tpipsec.ServerSession) { sessions <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
}

// nsDial dials from host h: each attempt's sockets are opened there
// ("[::]:0", dual-stack) and handed to l2tpipsec.Dial. It records when each
// target's attempt started.
func nsDial(t *testing.T, h *netns.Host, started map[string]time.Time, mu *sync.Mutex) func(context.Context, l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
	return func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
		mu.Lock()
		started[cfg.Gateway] = time.Now()
		mu.Unlock()
		ic, err := h.ListenPacket("udp", "[::]:0")
		if err != nil {
			return nil, err
		}
		nc, err := h.ListenPacket("udp", "[::]:0")
		if err != nil {
			ic.Close()
			return nil, err
		}
		cfg.IKEConn, cfg.NATTConn = ic, nc
		return l2tpipsec.Dial(ctx, cfg)
	}
}

// TestNetnsIPv6Outer: the uplink over an IPv6-only outer network
// (2001:db8::/64, no IPv4 on the link): the client reaches the gateway's
// dual-stack sockets, the session's outer address is the site's IPv6
// address, and IPv4 packets cross the tunnel both ways by sequence number
// (20 each way, none lost or duplicated). Then a dual-stack name whose
// AAAA is dead (2001:db8::99: on-link, nobody answers neighbour
// discovery) falls back to its A record; the real-time delay is logged
// (the 300 ms bound itself is asserted on the fake clock in
// TestHappyEyeballsDeadAAAA; here the bound is IKE's first
// retransmission, 2 s, with headroom for a loaded machine).
func TestNetnsIPv6Outer(t *testing.T) {
	p := netns.Pair6(t)
	gw, site := p.Host("a"), p.Host("b")
	sessions := make(chan *l2tpipsec.ServerSession, 4)
	nsGateway(t, gw, sessions)

	run := func(t *testing.T, gwAddr string, resolve func(context.Context, string) ([]netip.Addr, error)) (*Client, *l2tpipsec.ServerSession, map[string]time.Time, *sync.Mutex) {
		var mu sync.Mutex
		started := map[string]time.Time{}
		c, err := New(Config{
			Gateways: []Gateway{{Addr: gwAddr}}, Resolve: resolve, Dial: nsDial(t, site, started, &mu),
			Tunnel:     l2tpipsec.ClientConfig{PSK: []byte("uplink-psk"), Username: "site1", Password: "pw1"},
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		t.Cleanup(func() { c.Close() })
		var ss *l2tpipsec.ServerSession
		select {
		case ss = <-sessions:
		case <-time.After(30 * time.Second):
			t.Fatalf("no session: %+v", c.Status())
		}
		for deadline := time.Now().Add(30 * time.Second); c.Status().State != StateUp; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("client not up: %+v", c.Status())
			}
		}
		return c, ss, started, &mu
	}

	t.Run("ipv6-only", func(t *testing.T) {
		c, ss, _, _ := run(t, "[2001:db8::1]:500", nil)
		if got := ss.Outer().Addr(); got != site.Addr {
			t.Fatalf("session outer address %v, want %v", got, site.Addr)
		}
		const n = 20
		fromGW := make(chan uint32, n)
		c.SetPacketHandler(func(pkt []byte) { fromGW <- binary.BigEndian.Uint32(pkt[28:]) })
		fromSite := make(chan uint32, n)
		ss.SetPacketHandler(func(pkt []byte) { fromSite <- binary.BigEndian.Uint32(pkt[28:]) })
		for seq := range uint32(n) {
			if err := ss.WritePacket(udp4(netip.MustParseAddr("10.10.0.1"), ss.Addr(), seq)); err != nil {
				t.Fatal(err)
			}
			if err := c.WritePacket(udp4(ss.Addr(), netip.MustParseAddr("10.10.0.1"), seq)); err != nil {
				t.Fatal(err)
			}
		}
		for name, ch := range map[string]chan uint32{"gateway→site": fromGW, "site→gateway": fromSite} {
			seen := map[uint32]int{}
			deadline := time.After(20 * time.Second)
			for len(seen) < n {
				select {
				case s := <-ch:
					seen[s]++
				case <-deadline:
					t.Fatalf("%s: %d of %d packets arrived", name, len(seen), n)
				}
			}
			for s, k := range seen {
				if s >= n || k != 1 {
					t.Fatalf("%s: sequence %d arrived %d times", name, s, k)
				}
			}
		}
		t.Logf("up over IPv6 (%v → %v); %d packets each way, 0 lost, 0 duplicated", ss.Outer(), c.Status().Target, n)
		c.Close()
		<-ss.Done()
	})

	t.Run("dead-AAAA", func(t *testing.T) {
		p.AddAddr("a", "b", "192.0.2.1/24") // now dual-stack
		p.AddAddr("b", "a", "192.0.2.2/24")
		t0 := time.Now()
		c, ss, started, mu := run(t, "gw.example.net:500", func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("2001:db8::99"), netip.MustParseAddr("192.0.2.1")}, nil
		})
		up := time.Since(t0)
		mu.Lock()
		s6, s4 := started["[2001:db8::99]:500"], started["192.0.2.1:500"]
		mu.Unlock()
		if s6.IsZero() || s4.IsZero() {
			t.Fatalf("attempts started: %v", started)
		}
		if st := c.Status(); st.Target != "192.0.2.1:500" || ss.Outer().Addr() != netip.MustParseAddr("192.0.2.2") {
			t.Fatalf("up on %q from %v, want 192.0.2.1:500 from 192.0.2.2", st.Target, ss.Outer())
		}
		fallback := s4.Sub(s6)
		if fallback < DefaultHappyEyeballsDelay/2 || fallback > 2*time.Second {
			t.Fatalf("A attempt started %v after the AAAA one; want about %v", fallback, DefaultHappyEyeballsDelay)
		}
		t.Logf("dead AAAA: A attempt %v after the AAAA one, tunnel up (IPCP) %v after start", fallback, up)
	})
}

// udp4 is a minimal IPv4/UDP packet from src to dst carrying seq at
// offset 28 (checksums are not checked by the tunnel).
func udp4(src, dst netip.Addr, seq uint32) []byte {
	pkt := make([]byte, 32)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(pkt[2:], 32)
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	binary.BigEndian.PutUint16(pkt[20:], 5683)
	binary.BigEndian.PutUint16(pkt[22:], 5683)
	binary.BigEndian.PutUint16(pkt[24:], 12)
	binary.BigEndian.PutUint32(pkt[28:], seq)
	return pkt
}
