package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestRoutesMove200 measures what a gateway failover costs on the central
// router for 200 sessions: gateway A (192.0.2.1) announces 200 PPP /32s
// and 200 site /24s to bird; A stops (its neighbour sessions end, as when
// its process dies); gateway B (192.0.2.3) announces the same 400
// prefixes. Printed: time until bird holds all 400 via A, and from A's
// end until bird holds all 400 via B. Figures, not assertions.
func TestRoutesMove200(t *testing.T) {
	hosts, child := netns.InHost(t, "a", func() *netns.Topology { return netns.Pair(t) })
	if !child {
		return
	}
	if out, err := hosts["a"].Run(context.Background(), "ip", "addr", "add", "192.0.2.3/24", "dev", "b"); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	bird := realpeer.StartBird(t, hosts["b"], realpeer.BirdConfig{RouterID: "192.0.2.2", AS: 65000,
		Neighbors: []realpeer.BirdNeighbor{{Name: "peer_a", Addr: "192.0.2.1", AS: 65010, HoldTime: 9}, {Name: "peer_b", Addr: "192.0.2.3", AS: 65010, HoldTime: 9}}})
	speaker := func(addr string) *Speaker {
		a := netip.MustParseAddr(addr)
		sp, err := New(Config{LocalAS: 65010, RouterID: a, LocalAddr: a,
			Neighbors: []Neighbor{{Addr: netip.MustParseAddr("192.0.2.2"), AS: 65000, HoldTime: 9 * time.Second, ConnectRetry: time.Second}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return sp
	}
	const n = 200
	announce := func(sp *Speaker) {
		for i := 0; i < n; i++ {
			sp.Announce(uint64(i+1), []netip.Prefix{
				netip.MustParsePrefix(fmt.Sprintf("10.10.%d.%d/32", i/250, 2+i%250)),
				netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 20+i/250, i%250)),
			})
		}
	}
	countRE := regexp.MustCompile(`(\d+) of \d+ routes`)
	via := func(nh string) int {
		out, _ := bird.Command("show route count where gw = " + nh)
		m := countRE.FindStringSubmatch(out)
		if m == nil {
			return 0
		}
		v, _ := strconv.Atoi(m[1])
		return v
	}
	wait := func(what string, cond func() bool) time.Duration {
		start := time.Now()
		for !cond() {
			if time.Since(start) > 60*time.Second {
				t.Fatalf("%s: not within 60 s:\n%s", what, bird.Routes())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	a := speaker("192.0.2.1")
	b := speaker("192.0.2.3")
	defer b.Stop(context.Background())
	wait("both neighbours up", func() bool { return bird.Established("peer_a") && bird.Established("peer_b") })
	start := time.Now()
	announce(a)
	t.Logf("announce %d sessions (%d prefixes) on A: %v in Announce calls", n, 2*n, time.Since(start))
	up := wait("all via A", func() bool { return via("192.0.2.1") == 2*n })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := time.Now()
	a.Stop(ctx)
	stopTook := time.Since(stopped)
	announce(b) // the sessions come up on B
	wait("none via A", func() bool { return via("192.0.2.1") == 0 })
	gone := time.Since(stopped)
	wait("all via B", func() bool { return via("192.0.2.3") == 2*n })
	moved := time.Since(stopped)
	t.Logf("bird: %d prefixes via A %v after the first Announce; from A's stop (Stop took %v): none via A after %v, all %d via B after %v",
		2*n, up.Round(time.Millisecond), stopTook.Round(time.Millisecond), gone.Round(time.Millisecond), 2*n, moved.Round(time.Millisecond))
}
