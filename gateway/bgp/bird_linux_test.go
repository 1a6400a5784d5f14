package bgp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestBirdLearnsAndForgets peers the speaker (in namespace a, 192.0.2.1,
// AS 65010) with a real bird2 (in b, 192.0.2.2, AS 65000, MD5 password),
// a neighbour that answers every connection with garbage (192.0.2.3:1790)
// and one that does not exist (192.0.2.9). bird must learn the announced
// prefixes with next hop 192.0.2.1 and the community, relearn them after
// its session flaps, forget them on Withdraw and on Stop; the garbage and
// the dead neighbour never delay Announce.
func TestBirdLearnsAndForgets(t *testing.T) {
	hosts, child := netns.InHost(t, "a", func() *netns.Topology { return netns.Pair(t) })
	if !child {
		return
	}
	b := hosts["b"]
	if out, err := b.Run(context.Background(), "ip", "addr", "add", "192.0.2.3/24", "dev", "a"); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	var garbageConns atomic.Int32
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp4", "192.0.2.3:1790"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			garbageConns.Add(1)
			// A BGP-looking header with a bad marker and a length beyond
			// the 4096 maximum, then noise.
			_, _ = c.Write(append([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 9}, []byte(strings.Repeat("garbage", 100))...))
			c.Close()
		}
	}()

	bird := realpeer.StartBird(t, b, realpeer.BirdConfig{RouterID: "192.0.2.2", AS: 65000,
		Neighbors: []realpeer.BirdNeighbor{{Name: "peer_gw", Addr: "192.0.2.1", AS: 65010, Password: "md5-secret", HoldTime: 9}}})

	sp, err := New(Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})), LocalAS: 65010, RouterID: netip.MustParseAddr("192.0.2.1"), Communities: []uint32{65010<<16 | 100},
		Neighbors: []Neighbor{
			{Addr: netip.MustParseAddr("192.0.2.2"), AS: 65000, Password: "md5-secret", HoldTime: 9 * time.Second, ConnectRetry: time.Second},
			{Addr: netip.MustParseAddr("192.0.2.3"), AS: 65001, Port: 1790, ConnectRetry: time.Second},
			{Addr: netip.MustParseAddr("192.0.2.9"), AS: 65002, ConnectRetry: time.Second},
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			sp.Stop(context.Background())
		}
	})
	start := time.Now()
	sp.Announce(1, []netip.Prefix{netip.MustParsePrefix("10.10.0.5/32"), netip.MustParsePrefix("10.10.8.0/24")})
	sp.Announce(2, []netip.Prefix{netip.MustParsePrefix("10.10.0.6/32")})
	t.Logf("two Announce calls with one dead and one garbage neighbour returned in %v", time.Since(start))

	for _, p := range []string{"10.10.0.5/32", "10.10.8.0/24", "10.10.0.6/32"} {
		if !bird.WaitRoute(p, "192.0.2.1", true, 30*time.Second) {
			proto, _ := bird.Command("show protocols all peer_gw")
			filtered, _ := bird.Command("show route all filtered")
			t.Fatalf("bird never learnt %s via 192.0.2.1:\n%s\n%s\nfiltered:\n%s\nneighbours: %+v", p, bird.Routes(), proto, filtered, sp.Neighbors())
		}
	}
	t.Logf("bird learnt 3 prefixes %v after the first Announce", time.Since(start).Round(time.Millisecond))
	all, _ := bird.Command("show route 10.10.8.0/24 all")
	if !strings.Contains(all, "(65010,100)") {
		t.Errorf("community (65010,100) missing:\n%s", all)
	}
	if n := sp.Stats.Announced.Load(); n != 3 {
		t.Errorf("Stats.Announced = %d, want 3", n)
	}

	// Flap bird's session: the routes come back with it.
	for _, c := range []string{"disable peer_gw", "enable peer_gw"} {
		if out, err := bird.Command(c); err != nil {
			t.Fatalf("birdc %s: %v: %s", c, err, out)
		}
	}
	flapped := time.Now()
	if !bird.WaitRoute("10.10.8.0/24", "192.0.2.1", true, 30*time.Second) {
		t.Fatalf("route not back after the flap:\n%s", bird.Routes())
	}
	t.Logf("route back %v after the flap", time.Since(flapped).Round(time.Millisecond))

	sp.Withdraw(1)
	if !bird.WaitRoute("10.10.8.0/24", "192.0.2.1", false, 30*time.Second) || !bird.WaitRoute("10.10.0.5/32", "192.0.2.1", false, 5*time.Second) {
		t.Fatalf("withdrawn prefixes still in bird:\n%s", bird.Routes())
	}
	if !bird.HasRoute("10.10.0.6/32", "192.0.2.1") {
		t.Fatalf("the other owner's prefix went too:\n%s", bird.Routes())
	}

	if garbageConns.Load() == 0 {
		t.Errorf("the garbage neighbour was never dialled")
	}
	for _, n := range sp.Neighbors() {
		want := n.Addr == netip.MustParseAddr("192.0.2.2")
		if n.Established != want {
			t.Errorf("neighbour %s established = %v, want %v", n.Addr, n.Established, want)
		}
	}

	// Reload: new community, the garbage neighbour removed.
	added, removed, changed, err := sp.Reconfigure(ctx, []Neighbor{
		{Addr: netip.MustParseAddr("192.0.2.2"), AS: 65000, Password: "md5-secret", HoldTime: 9 * time.Second, ConnectRetry: time.Second},
		{Addr: netip.MustParseAddr("192.0.2.9"), AS: 65002, ConnectRetry: time.Second},
	}, netip.Addr{}, []uint32{65010<<16 | 200})
	if err != nil || added != 0 || removed != 1 || changed != 0 {
		t.Fatalf("Reconfigure: +%d -%d ~%d, %v; want -1", added, removed, changed, err)
	}
	if !poll(30*time.Second, func() bool {
		out, _ := bird.Command("show route 10.10.0.6/32 all")
		return strings.Contains(out, "(65010,200)") && !strings.Contains(out, "(65010,100)")
	}) {
		out, _ := bird.Command("show route 10.10.0.6/32 all")
		t.Fatalf("community not replaced after Reconfigure:\n%s", out)
	}
	if n := len(sp.Neighbors()); n != 2 {
		t.Errorf("neighbours after Reconfigure: %d, want 2", n)
	}
	conns := garbageConns.Load()
	time.Sleep(2500 * time.Millisecond) // > 2 connect retries of the removed neighbour
	if garbageConns.Load() != conns {
		t.Errorf("the removed garbage neighbour is still dialled")
	}

	sp.Stop(ctx)
	stopped = true
	if !bird.WaitRoute("10.10.0.6/32", "192.0.2.1", false, 30*time.Second) {
		t.Fatalf("routes stay in bird after Stop:\n%s", bird.Routes())
	}
	t.Logf("garbage connections: %d; peer transitions: %d", garbageConns.Load(), sp.Stats.PeerTransitions.Load())
}

// poll calls cond every 50 ms until it is true or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
