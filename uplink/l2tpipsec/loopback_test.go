package l2tpipsec_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// loopbackServer starts a server on 127.0.0.1 with ephemeral IKE and
// NAT-T ports (real sockets, real clock), assigning 10.10.8.<n> per user.
func loopbackServer(t testing.TB, sessions chan *l2tpipsec.ServerSession, edit ...func(*l2tpipsec.ServerConfig)) *l2tpipsec.Server {
	t.Helper()
	users := ppp.LocalUsers{"site1": "pw1", "site2": "pw2"}
	cfg := l2tpipsec.ServerConfig{
		IKEAddr: "127.0.0.1:0", NATTAddr: "127.0.0.1:0",
		PSK:           func(netip.Addr) ([]byte, bool) { return []byte("loopback-psk"), true },
		IKEOptions:    l2tpipsec.IKEOptions{ESPProposals: "aes128gcm16,aes128-sha1"},
		Authenticator: users,
		AddressFunc: func(_ context.Context, user string) (ppp.Assignment, error) {
			n := byte(1)
			if user == "site2" {
				n = 2
			}
			return ppp.Assignment{Addr: netip.AddrFrom4([4]byte{10, 10, 8, n})}, nil
		},
		LocalAddr: netip.MustParseAddr("10.10.0.1"),
		OnSession: func(s *l2tpipsec.ServerSession) { sessions <- s },
	}
	for _, e := range edit {
		e(&cfg)
	}
	srv, err := l2tpipsec.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func loopbackClient(srv *l2tpipsec.Server, user, pw string) l2tpipsec.ClientConfig {
	return l2tpipsec.ClientConfig{
		Gateway: srv.IKEAddr().String(), NATTPort: srv.NATTAddr().Port(),
		LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
		PSK:      []byte("loopback-psk"),
		LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(user + ".sites.example")},
		Username: user, Password: pw,
	}
}

// TestLoopbackTwoClientsBehindOneAddress: two clients on 127.0.0.1 (one
// outer address, as behind one NAT; both use inner port 1701) dial a
// server over real UDP sockets; each gets its own session, SA pair and
// address, and packets reach the right one.
func TestLoopbackTwoClientsBehindOneAddress(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sessions := make(chan *l2tpipsec.ServerSession, 4)
	srv := loopbackServer(t, sessions)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	clients := make([]*l2tpipsec.Tunnel, 2)
	errs := make([]error, 2)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := loopbackClient(srv, fmt.Sprintf("site%d", i+1), fmt.Sprintf("pw%d", i+1))
			clients[i], errs[i] = l2tpipsec.Dial(ctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i+1, err)
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
			t.Fatalf("server sessions: %d of 2", len(byUser))
		}
	}
	s1, s2 := byUser["site1"], byUser["site2"]
	if s1.Outer().Addr() != s2.Outer().Addr() || s1.Outer() == s2.Outer() {
		t.Fatalf("outer addresses %v and %v: want one IP, two ports", s1.Outer(), s2.Outer())
	}
	if s1.IdentityString() != "site1.sites.example" || s2.IdentityString() != "site2.sites.example" {
		t.Fatalf("identities %q %q", s1.IdentityString(), s2.IdentityString())
	}
	if srv.PeerCount() != 2 {
		t.Fatalf("server IPsec peers %d, want 2", srv.PeerCount())
	}
	for i, c := range clients {
		want := netip.AddrFrom4([4]byte{10, 10, 8, byte(i + 1)})
		if c.LocalAddr() != want {
			t.Fatalf("client %d address %v, want %v", i+1, c.LocalAddr(), want)
		}
	}
	// Each server session's packets reach only its own client.
	got := []collector{make(collector, 1024), make(collector, 1024)}
	srvGot := []collector{make(collector, 1024), make(collector, 1024)}
	for i, c := range clients {
		c.SetPacketHandler(got[i].handle)
	}
	s1.SetPacketHandler(srvGot[0].handle)
	s2.SetPacketHandler(srvGot[1].handle)
	const n = 100
	for k := 0; k < n; k++ {
		for i, s := range []*l2tpipsec.ServerSession{s1, s2} {
			if err := s.WritePacket(pkttest.Tagged(netip.MustParseAddr("10.10.0.1"), clients[i].LocalAddr(), uint32(i*1000+k), 1400)); err != nil {
				t.Fatal(err)
			}
			if err := clients[i].WritePacket(pkttest.Tagged(clients[i].LocalAddr(), netip.MustParseAddr("10.10.0.1"), uint32(i*1000+k), 200)); err != nil {
				t.Fatal(err)
			}
		}
		if k%20 == 19 {
			time.Sleep(time.Millisecond) // stay under the socket buffers
		}
	}
	for i := range clients {
		seen := map[uint32]bool{}
		sseen := map[uint32]bool{}
		timeout := time.After(10 * time.Second)
		for len(seen) < n || len(sseen) < n {
			select {
			case v := <-got[i]:
				if v/1000 != uint32(i) {
					t.Fatalf("client %d got server session %d's packet", i+1, v/1000+1)
				}
				seen[v] = true
			case v := <-srvGot[i]:
				if v/1000 != uint32(i) {
					t.Fatalf("server session %d got client %d's packet", i+1, v/1000+1)
				}
				sseen[v] = true
			case <-timeout:
				t.Fatalf("client %d: %d/%d down, %d/%d up", i+1, len(seen), n, len(sseen), n)
			}
		}
	}
	// Client 1 leaves cleanly; client 2 is unaffected.
	clients[0].Close()
	select {
	case <-s1.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server session 1 did not end")
	}
	if err := s2.WritePacket(pkttest.Tagged(netip.MustParseAddr("10.10.0.1"), clients[1].LocalAddr(), 1999, 100)); err != nil {
		t.Fatalf("session 2 after client 1 left: %v", err)
	}
	select {
	case v := <-got[1]:
		if v != 1999 {
			t.Fatalf("client 2 got %d", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client 2 lost its session when client 1 left")
	}
}

// TestLoopbackRekeyUnderTraffic: real sockets and the real clock, 3-second
// IPsec SAs (rekeyed at half-life) and a 6-second IKE SA, a packet each way
// every 5 ms for 8 seconds: every packet arrives.
func TestLoopbackRekeyUnderTraffic(t *testing.T) {
	testenv.SkipIfShort(t, "8 s of real time")
	stacktest.CheckGoroutines(t)
	sessions := make(chan *l2tpipsec.ServerSession, 2)
	short := l2tpipsec.IKEOptions{IPsecLifetime: 3 * time.Second, IKELifetime: 6 * time.Second, RekeyMargin: 1500 * time.Millisecond}
	srv := loopbackServer(t, sessions, func(c *l2tpipsec.ServerConfig) { c.IKEOptions = short })
	cfg := loopbackClient(srv, "site1", "pw1")
	cfg.IKEOptions = short
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := l2tpipsec.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ss := <-sessions
	first := c.Status()
	down, up := make(collector, 4096), make(collector, 4096)
	c.SetPacketHandler(down.handle)
	ss.SetPacketHandler(up.handle)
	n := 0
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); n++ {
		if err := c.WritePacket(pkttest.Tagged(c.LocalAddr(), netip.MustParseAddr("10.10.0.1"), uint32(n), 1000)); err != nil {
			t.Fatalf("client write %d: %v", n, err)
		}
		if err := ss.WritePacket(pkttest.Tagged(netip.MustParseAddr("10.10.0.1"), c.LocalAddr(), uint32(n), 300)); err != nil {
			t.Fatalf("server write %d: %v", n, err)
		}
		time.Sleep(5 * time.Millisecond) // paced traffic, as a site sends it
	}
	up.expect(t, "server", n)
	down.expect(t, "client", n)
	last := c.Status()
	cs := c.Stats()
	t.Logf("%d packets each way; client rekeys %d, phase 1 %d, SPI %08x -> %08x", n, cs.IKE.Rekeys.Load(), cs.IKE.Phase1Established.Load(), first.InSPI, last.InSPI)
	if last.InSPI == first.InSPI || cs.IKE.Phase1Established.Load()+srv.Stats().IKE.Phase1Established.Load() < 3 {
		t.Fatalf("no rekey of both kinds in 8 s: %+v", last)
	}
}
