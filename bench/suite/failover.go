package suite

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/uplink"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// The failover suite (issue 20): n edge uplinks (the uplink package's
// long-running client as the bridge runs it, DEFAULT timers: LCP echo
// 20 s x 3, on-demand probe 2 s, DPD 30 s, backoff 1 s … 2 min, answer
// timeout 10 s) list two gateways; each sends one small UDP datagram a
// second through its tunnel (telemetry) to an echo service in the
// gateway's data plane. The gateway most of them are on is killed: its
// sockets close at once, nothing it does afterwards reaches a client (as
// kill -9 of a gateway process on a host that stays up: the clients'
// next packets get ICMP port unreachable). Measured from the kill, for
// the edges that were on it:
//   - "route moved": the surviving gateway registered the edge's session
//     (the moment it announces the /32 and framed routes over BGP; moving
//     400 prefixes in bird takes ~0.5 s more, gateway/bgp
//     TestRoutesMove200);
//   - "service restored": the first echo reply through the new tunnel.
//
// Both gateways run in this process on loopback (one CPU budget, as one
// machine hosting the surviving gateway and the clients). Before the
// kill the edges come up on the first gateway, 32 at a time.

// failoverGW is one in-process gateway of the suite.
type failoverGW struct {
	srv         *server.Server
	ike         netip.AddrPort
	natt        uint16
	ikeC, nattC net.PacketConn
	run         func() // starts the engine and the server, waits until ready
}

// kill closes the gateway's sockets: it can neither answer nor tell
// anybody it is gone. Its Run ends at the scope's cleanup.
func (g *failoverGW) kill() {
	_ = g.ikeC.Close()
	_ = g.nattC.Close()
}

func startFailoverGW(t testing.TB, n int, pool string) *failoverGW {
	var ids strings.Builder
	for i := range n {
		fmt.Fprintf(&ids, "  - {name: s%d, ppp: {password: pw}}\n", i)
	}
	yml := strings.Replace(fmt.Sprintf(gwYAML, benchPSK, ids.String()), "10.10.0.0/16", pool, 1)
	cfg, err := config.Parse("failover.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	us, err := dataplane.NewUserspace(dataplane.UserspaceConfig{Addrs: []netip.Prefix{netip.PrefixFrom(central, 32)}, Queue: 4096})
	if err != nil {
		t.Fatal(err)
	}
	echo, err := us.Stack().ListenUDP(netip.AddrPortFrom(central, 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:k], from)
		}
	}()
	listen := func() net.PacketConn {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g := &failoverGW{ikeC: listen(), nattC: listen()}
	g.ike = g.ikeC.LocalAddr().(*net.UDPAddr).AddrPort()
	g.natt = g.nattC.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	g.run = func() {
		eng := engine.New(engine.Config{IKEConn: g.ikeC, NATTConn: g.nattC, RatePerSource: 100000, BurstPerSource: 100000, MaxHalfOpen: 20000, Logger: quietLog})
		g.srv = runGateway(t, cfg, eng, us).srv
	}
	return g
}

// failoverInFlight bounds the edges connecting at once before the kill.
const failoverInFlight = 32

// failoverEdge is one edge uplink and what the suite saw of it.
type failoverEdge struct {
	c       *uplink.Client
	name    string
	replied atomic.Int64 // unix ns of the last echo reply
}

// benchFailover runs the suite for every o.FailoverEdges size.
func benchFailover(o *Options, rep *Report) {
	const title = "Gateway failover (edges on the killed gateway; rate = edges / time from the kill until the last one)"
	var rows []Row
	for _, n := range o.FailoverEdges {
		benchFailoverN(o, rep, n, &rows)
	}
	rep.add(title, "edges/s", rows)
}

func benchFailoverN(o *Options, rep *Report, n int, rows *[]Row) {
	nameRoute := fmt.Sprintf("%d edges: kill → session on the surviving gateway (route announced)", n)
	nameService := fmt.Sprintf("%d edges: kill → service restored (echo through the new tunnel)", n)
	_, msg, err := runScoped("failover", func(t testing.TB) {
		// The edges come up on the first gateway (their first choice) at
		// most failoverInFlight at a time, so none fails over to the
		// second before the kill and all n move.
		g1 := startFailoverGW(t, n, "10.10.0.0/16")
		g2 := startFailoverGW(t, n, "10.11.0.0/16")
		g1.run()
		g2.run()
		edges := make([]*failoverEdge, n)
		// Failed attempts after the kill, by gateway and error.
		var killedAt atomic.Int64
		var failMu sync.Mutex
		fails := map[string]int{}
		gwName := func(addr string) string {
			switch addr {
			case g1.ike.String():
				return "killed"
			case g2.ike.String():
				return "survivor"
			}
			return addr
		}
		for i := range edges {
			e := &failoverEdge{name: fmt.Sprintf("s%d", i)}
			c, err := uplink.New(uplink.Config{
				Gateways: []uplink.Gateway{{Addr: g1.ike.String(), NATTPort: g1.natt}, {Addr: g2.ike.String(), NATTPort: g2.natt}},
				Tunnel: l2tpipsec.ClientConfig{
					LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0", PSK: []byte(benchPSK),
					LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: fmt.Appendf(nil, "s%d.sites.example", i)},
					Username: e.name, Password: "pw",
					IKEOptions: l2tpipsec.IKEOptions{IKEProposals: o.StormIKE, ESPProposals: "aes128gcm16"},
					Logger:     quietLog,
				},
				Logger: quietLog,
				OnState: func(st uplink.Status) {
					if st.State != uplink.StateBackoff || st.LastErr == nil || killedAt.Load() == 0 {
						return
					}
					k := gwName(st.Gateway) + ": " + st.LastErr.Error()
					failMu.Lock()
					fails[k]++
					failMu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			c.SetPacketHandler(func(pkt []byte) {
				if len(pkt) >= 28 && pkt[9] == 17 && binary.BigEndian.Uint16(pkt[20:]) == 7 {
					e.replied.Store(time.Now().UnixNano())
				}
			})
			e.c, edges[i] = c, e
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		t.Cleanup(func() {
			close(stop)
			wg.Wait()
			var cw sync.WaitGroup
			for _, e := range edges {
				cw.Add(1)
				go func() { defer cw.Done(); _ = e.c.Close() }()
			}
			cw.Wait()
		})
		up := func() int {
			k := 0
			for _, e := range edges {
				if e.c.Status().State == uplink.StateUp && e.replied.Load() > 0 {
					k++
				}
			}
			return k
		}
		t0 := time.Now()
		for i, e := range edges {
			for i-up() >= failoverInFlight && time.Since(t0) < 5*time.Minute {
				time.Sleep(5 * time.Millisecond)
			}
			e.c.Start()
			// Telemetry: one datagram a second, phases spread.
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := time.NewTicker(time.Second)
				defer tk.Stop()
				select {
				case <-stop:
					return
				case <-time.After(rand.N(time.Second)):
				}
				for {
					if a := e.c.LocalAddr(); a.IsValid() {
						_ = e.c.WritePacket(udpPacket(a, central, 7, 64))
					}
					select {
					case <-stop:
						return
					case <-tk.C:
					}
				}
			}()
		}
		m, last := stormTimes(t0, n, 5*time.Minute, up)
		if m[2] == 0 {
			t.Fatalf("initial connect: %d of %d edges up with an echo reply", last, n)
		}
		var moved []*failoverEdge
		for _, e := range edges {
			if e.c.Status().Gateway == g1.ike.String() {
				moved = append(moved, e)
			}
		}
		rep.note("failover: %d edges up with service in %s; %d of them on the gateway to be killed", n, fmtMarks(m), len(moved))
		if len(moved) == 0 {
			t.Fatal("no edge on the first gateway")
		}
		killed := time.Now()
		killedAt.Store(killed.UnixNano())
		g1.kill()
		routeAt := make([]time.Duration, len(moved))
		serviceAt := make([]time.Duration, len(moved))
		var detected time.Duration
		env := g2.srv.Env()
		deadline := killed.Add(3 * time.Minute)
		for {
			el := time.Since(killed)
			doneR, doneS, down := 0, 0, 0
			for i, e := range moved {
				if routeAt[i] == 0 && env.Sessions.ByIdentity(e.name) != nil {
					routeAt[i] = el
				}
				if serviceAt[i] == 0 && e.replied.Load() > killed.UnixNano() && e.c.Status().Gateway == g2.ike.String() {
					serviceAt[i] = el
				}
				if routeAt[i] > 0 {
					doneR++
				}
				if serviceAt[i] > 0 {
					doneS++
				}
				if e.c.Status().State != uplink.StateUp {
					down++
				}
			}
			if detected == 0 && down > 0 {
				detected = el
			}
			if (doneR == len(moved) && doneS == len(moved)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mr, lr := failoverMarks(routeAt)
		ms, ls := failoverMarks(serviceAt)
		*rows = append(*rows, stormRow(nameRoute, len(moved), mr, lr), stormRow(nameService, len(moved), ms, ls))
		var attempts, failures uint64
		phases := map[string]int{}
		for _, e := range moved {
			st := e.c.Status()
			attempts, failures = attempts+st.Attempts, failures+st.Failures
			if st.Failures > 0 {
				phases[st.LastPhase.String()]++
			}
		}
		failMu.Lock()
		rep.note("failover: failed attempts after the kill by gateway and error: %v", fails)
		failMu.Unlock()
		rep.note("failover: %d edges on the killed gateway (default client timers, 1 datagram/s each): first edge noticed after %v; route (session on the surviving gateway): %s; service (echo through the new tunnel): %s; %d attempts, %d failed (last failed phase: %v)",
			len(moved), detected.Round(10*time.Millisecond), fmtMarks(mr), fmtMarks(ms), attempts, failures, phases)
		rep.note("failover: surviving gateway: %s", gatewayFailures(g2.srv))
		if n >= 1000 {
			ok := ms[2] > 0 && ms[2] < 30*time.Second
			rep.note("failover: goal %d edge uplinks back on the surviving gateway in < 30 s: %s (%s)", len(moved), okWord(ok), fmtMarks(ms))
		}
	})
	if err != nil {
		*rows = append(*rows, Row{Name: nameService, Err: err.Error()})
	} else if msg != "" {
		*rows = append(*rows, Row{Name: nameService, Err: "skipped: " + msg})
	}
}

// failoverMarks turns per-edge times (0: not reached) into 50/99/100 %
// marks and the count reached.
func failoverMarks(at []time.Duration) (marks [3]time.Duration, reached int) {
	var got []time.Duration
	for _, d := range at {
		if d > 0 {
			got = append(got, d)
		}
	}
	reached = len(got)
	n := len(at)
	slices.Sort(got)
	for i, goal := range [3]int{(n + 1) / 2, (n*99 + 99) / 100, n} {
		if goal >= 1 && goal <= len(got) {
			marks[i] = got[goal-1]
		}
	}
	return marks, reached
}

// gatewayFailures lists the gateway's non-zero set-up failure and refusal
// counters.
func gatewayFailures(srv *server.Server) string {
	mfs, err := srv.Metrics().Gather()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.Contains(name, "fail") && !strings.Contains(name, "refus") {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			if v == 0 {
				continue
			}
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out = append(out, fmt.Sprintf("%s{%s} %g", name, strings.Join(ls, ","), v))
		}
	}
	if len(out) == 0 {
		return "no set-up failure or refusal counted"
	}
	return strings.Join(out, "; ")
}
