package uplink

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestDNSGatewaysFailover: one gateway name with two A records
// (127.0.0.2 and 127.0.0.3, same ports). The client comes up on one; that
// gateway shuts down; the next attempt resolves the name again and moves
// on to the other address by itself.
func TestDNSGatewaysFailover(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sessions := make(chan *l2tpipsec.ServerSession, 4)
	var servers map[string]*l2tpipsec.Server
	var ikePort, nattPort int
	// Two servers on the same ports of two loopback addresses; ports are
	// picked free on one address, so retry if the other has them taken.
	for try := 0; servers == nil; try++ {
		ikePort, nattPort = freePorts(t)
		servers = map[string]*l2tpipsec.Server{}
		for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
			srv, err := l2tpipsec.NewServer(l2tpipsec.ServerConfig{
				IKEAddr: net.JoinHostPort(ip, itoa(ikePort)), NATTAddr: net.JoinHostPort(ip, itoa(nattPort)),
				PSK:           func(netip.Addr) ([]byte, bool) { return []byte("uplink-psk"), true },
				Authenticator: ppp.LocalUsers{"site1": "pw1"},
				AddressFunc: func(context.Context, string) (ppp.Assignment, error) {
					return ppp.Assignment{Addr: netip.MustParseAddr("10.10.8.1")}, nil
				},
				LocalAddr: netip.MustParseAddr("10.10.0.1"),
				OnSession: func(s *l2tpipsec.ServerSession) { sessions <- s },
			})
			if err != nil {
				if try == 5 {
					t.Fatalf("cannot bind %s:%d/%d: %v", ip, ikePort, nattPort, err)
				}
				for _, s := range servers {
					s.Close()
				}
				servers = nil
				break
			}
			t.Cleanup(func() { srv.Close() })
			servers[ip] = srv
		}
	}
	var lookups atomic.Int32
	c, err := New(Config{
		Gateways: []Gateway{{Addr: "gw.example.net:" + itoa(ikePort), NATTPort: uint16(nattPort)}},
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			if host != "gw.example.net" {
				return nil, errors.New("unexpected name " + host)
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.2")}, nil
		},
		Tunnel: l2tpipsec.ClientConfig{
			LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
			PSK: []byte("uplink-psk"), Username: "site1", Password: "pw1",
			IKEOptions: l2tpipsec.IKEOptions{Retransmit: 200 * time.Millisecond, Retries: 2},
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() { c.Close() })
	waitUp := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := c.Status()
			if st.State == StateUp && st.Target != not {
				return st.Target
			}
			if time.Now().After(deadline) {
				t.Fatalf("not up on a new target: %+v", st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	first := waitUp("")
	host, _, _ := net.SplitHostPort(first)
	if servers[host] == nil {
		t.Fatalf("up on %s, not one of the name's IPv4 addresses", first)
	}
	if st := c.Status(); st.Gateway != "gw.example.net:"+itoa(ikePort) {
		t.Fatalf("status gateway %q", st.Gateway)
	}
	servers[host].Close()
	second := waitUp(first)
	h2, _, _ := net.SplitHostPort(second)
	if h2 == host || servers[h2] == nil {
		t.Fatalf("failed over from %s to %s", first, second)
	}
	if lookups.Load() < 2 {
		t.Fatalf("%d lookups: the name is not resolved per attempt", lookups.Load())
	}
	t.Logf("up on %s, then on %s after it closed (%d lookups)", first, second, lookups.Load())
}

// TestDNSGatewaysSpread: a fleet of clients with their own random
// offsets spreads over a name's addresses, and each client's choice is
// stable until it fails.
func TestDNSGatewaysSpread(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")}
	count := map[string]int{}
	for i := range 1000 {
		c, err := New(Config{
			Gateways: []Gateway{{Addr: "gw.example.net"}},
			Resolve:  func(context.Context, string) ([]netip.Addr, error) { return addrs, nil },
			Rand:     rand.New(rand.NewPCG(uint64(i), 7)),
		})
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.target0(0)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := c.target0(0); b != a {
			t.Fatalf("choice not stable: %s then %s", a, b)
		}
		c.health[0].failures++
		if b, _ := c.target0(0); b == a {
			t.Fatalf("a failure did not move on from %s", a)
		}
		count[a]++
	}
	for _, a := range addrs {
		n := count[netip.AddrPortFrom(a, l2tpipsec.DefaultIKEPort).String()]
		if n < 150 || n > 350 {
			t.Fatalf("1000 clients over 4 addresses: %v", count)
		}
	}
	// A name without usable addresses and a failing lookup are transport
	// failures with the name in the message.
	c, _ := New(Config{Gateways: []Gateway{{Addr: "v6only.example.net"}}, NoIPv6: true,
		Resolve: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("2001:db8::1")}, nil
		}})
	if _, err := c.target0(0); l2tpipsec.PhaseOf(err) != l2tpipsec.PhaseTransport {
		t.Fatalf("v6-only name with NoIPv6: %v", err)
	}
}

// TestDNSGatewaysDualStack: a dual-stack name gives two targets, IPv6
// first (RFC 8305 §4), each family picked at the client's offset; an
// IPv6-only name one IPv6 target; a specific IPv4 local address or NoIPv6
// drops the AAAA records.
func TestDNSGatewaysDualStack(t *testing.T) {
	names := map[string][]netip.Addr{
		"dual.example.net": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")},
		"v6.example.net":   {netip.MustParseAddr("2001:db8::1")},
	}
	mk := func(name, local string, no6 bool) *Client {
		c, err := New(Config{Gateways: []Gateway{{Addr: name}}, NoIPv6: no6, Tunnel: l2tpipsec.ClientConfig{LocalIKE: local},
			Resolve: func(_ context.Context, h string) ([]netip.Addr, error) { return names[h], nil },
			Rand:    rand.New(rand.NewPCG(1, 2))})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	got, err := mk("dual.example.net", "", false).targets(0)
	if err != nil || len(got) != 2 {
		t.Fatalf("dual-stack targets %v, %v", got, err)
	}
	a6, a4 := netip.MustParseAddrPort(got[0]).Addr(), netip.MustParseAddrPort(got[1]).Addr()
	if !a6.Is6() || !a4.Is4() {
		t.Fatalf("dual-stack targets %v: want IPv6 first, then IPv4", got)
	}
	if got, _ := mk("v6.example.net", "", false).targets(0); len(got) != 1 || got[0] != "[2001:db8::1]:500" {
		t.Fatalf("IPv6-only name: %v", got)
	}
	for _, c := range []*Client{mk("dual.example.net", "192.0.2.9:0", false), mk("dual.example.net", "", true)} {
		if got, _ := c.targets(0); len(got) != 1 || !netip.MustParseAddrPort(got[0]).Addr().Is4() {
			t.Fatalf("IPv4-only client: %v", got)
		}
	}
	if got, _ := mk("dual.example.net", "[2001:db8::9]:0", false).targets(0); len(got) != 1 || !netip.MustParseAddrPort(got[0]).Addr().Is6() {
		t.Fatalf("IPv6-bound client: %v", got)
	}
}

// target0 is the first target of gateway i.
func (c *Client) target0(i int) (string, error) {
	ts, err := c.targets(i)
	if err != nil {
		return "", err
	}
	return ts[0], nil
}

func freePorts(t *testing.T) (int, int) {
	t.Helper()
	var ports [2]int
	for i := range ports {
		pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
	}
	return ports[0], ports[1]
}

func itoa(n int) string { return strconv.Itoa(n) }
