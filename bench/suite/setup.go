package suite

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// setupSample brings up n complete sessions one after another (Main Mode,
// Quick Mode, L2TP, PPP, IPCP), closing each once it is up; cc makes a
// fresh client config (new sockets) per session. Only the set-ups are
// timed (and their CPU counted), not the graceful closes between them.
// serverOnly: CPU is serverCPU's alone (the side under test), else this
// process's too.
func setupSample(n int, cc func() l2tpipsec.ClientConfig, serverCPU func() time.Duration, serverOnly bool) (Sample, error) {
	var el, cpu time.Duration
	self := cpuTime
	if serverOnly {
		self = zeroCPU
	}
	for i := range n {
		c := cc()
		cpu0, x0 := self(), serverCPU()
		t0 := time.Now()
		tn, err := dialTunnel(c)
		el += time.Since(t0)
		cpu += self() - cpu0 + serverCPU() - x0
		if err != nil {
			closeConns(c)
			return Sample{}, fmt.Errorf("session %d: %w", i, err)
		}
		_ = tn.Close()
		closeConns(c)
	}
	return Sample{Rate: float64(n) / el.Seconds(), CPUPerOp: cpu / time.Duration(n)}, nil
}

func closeConns(c l2tpipsec.ClientConfig) {
	if c.IKEConn != nil {
		_ = c.IKEConn.Close()
	}
	if c.NATTConn != nil {
		_ = c.NATTConn.Close()
	}
}

// benchSetup is measurement 2: sequential set-ups against our gateway
// (MODP-2048 and ECP-256) and SoftEther (MODP-2048), same veth pair.
func benchSetup(o *Options, rep *Report) {
	const title = "Session set-up (Main Mode, Quick Mode, L2TP, PPP MS-CHAPv2, IPCP), sequential"
	_, msg, err := runScoped("setup", func(t testing.TB) {
		var edge, gwh *netns.Host
		rootOK := skipReason(func(t testing.TB) { testenv.RequireRoot(t) }) == ""
		if rootOK {
			topo := netns.Pair(t)
			edge, gwh = topo.Host("a"), topo.Host("b")
		} else {
			rep.note("set-up: not root, SoftEther skipped and ours runs on loopback")
		}
		// Our gateway runs in a child process (as SoftEther does), so the
		// CPU per set-up is the server's alone, not our client's too.
		g := startGatewayProcess(t, gwh, 2)
		gwCPU := func() time.Duration { return treeCPU(g.pid) }
		names := []string{"ours MODP-2048", "ours ECP-256"}
		runs := []func() (Sample, error){
			func() (Sample, error) {
				return setupSample(o.Setups, func() l2tpipsec.ClientConfig {
					return clientConfigTo(t, edge, g.ike, g.natt, 0, "aes128-sha1-modp2048", "aes128-sha1")
				}, gwCPU, true)
			},
			func() (Sample, error) {
				return setupSample(o.Setups, func() l2tpipsec.ClientConfig {
					return clientConfigTo(t, edge, g.ike, g.natt, 1, "aes128-sha256-ecp256", "aes128-sha1")
				}, gwCPU, true)
			},
		}
		if rootOK {
			if reason := skipReason(func(t testing.TB) { testenv.RequireBinary(t, "vpnserver") }); reason != "" {
				rep.note("set-up: SoftEther skipped: %s", reason)
			} else {
				se := realpeer.StartSoftEther(t, gwh, realpeer.SoftEtherConfig{PSK: benchPSK, Users: map[string]string{"site1": "pw1"}})
				names = append(names, "SoftEther MODP-2048")
				runs = append(runs, func() (Sample, error) {
					return setupSample(o.Setups, func() l2tpipsec.ClientConfig {
						return l2tpipsec.ClientConfig{
							Gateway: netip.AddrPortFrom(gwh.Addr, 500).String(),
							IKEConn: listenIn(t, edge), NATTConn: listenIn(t, edge),
							PSK:        []byte(benchPSK),
							IKEOptions: l2tpipsec.IKEOptions{IKEProposals: "aes128-sha1-modp2048", ESPProposals: "aes128-sha1", DPDInterval: -1},
							Username:   "site1", Password: "pw1",
						}
					}, func() time.Duration { return treeCPU(se.Proc.PID) }, true)
				})
			}
		}
		rows := alternate(o.Reps, names, runs)
		rep.add(title, "sessions/s", rows)
		rep.ratio(title, "ours MODP-2048 / SoftEther MODP-2048 (set-ups/s; CPU: server process only)", rows, "ours MODP-2048", "SoftEther MODP-2048", 2)
	})
	if err != nil {
		rep.note("set-up failed: %v", err)
	} else if msg != "" {
		rep.note("set-up: %s", msg)
	}
}

// gatewayProcess is our gateway in a child process (this command with
// -helper-gateway), listening in a namespace.
type gatewayProcess struct {
	pid  int
	ike  netip.AddrPort
	natt uint16
}

// startGatewayProcess starts our gateway with n identities in a child
// process in h (nil: this namespace, loopback) and waits until it is ready.
func startGatewayProcess(t testing.TB, h *netns.Host, n int) *gatewayProcess {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1"
	if h != nil {
		addr = h.Addr.String()
	}
	cmd := h.Command(exe, "-helper-gateway", strconv.Itoa(n), "-helper-bind", addr)
	stdin, out := launch(t, cmd, true)
	stopOnCleanup(t, cmd, stdin, 10*time.Second)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				ready <- sc.Text()
			}
		}
		close(ready)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(30 * time.Second):
	}
	g := &gatewayProcess{pid: cmd.Process.Pid}
	var ike string
	if _, err := fmt.Sscanf(line, "ready %s %d", &ike, &g.natt); err != nil {
		t.Fatalf("gateway child process not ready (%q): %v", line, err)
	}
	if g.ike, err = netip.ParseAddrPort(ike); err != nil {
		t.Fatalf("gateway child process: %v", err)
	}
	return g
}

// helperGateway is the child side of startGatewayProcess: our gateway with
// n identities on bind, "ready <ike addr:port> <natt port>" on stdout, until
// stdin closes.
func helperGateway(n int, bind string) int {
	addr, err := netip.ParseAddr(bind)
	if err != nil {
		logf("helper-gateway: %v", err)
		return 2
	}
	_, msg, err := runScoped("helper-gateway", func(t testing.TB) {
		g := startOurGatewayAt(t, nil, addr, n)
		ts := g.eng.Tunnel()
		fmt.Printf("ready %s %d\n", ts.IKEAddr(), ts.NATTAddr().Port())
		_, _ = io.Copy(io.Discard, os.Stdin)
	})
	if err != nil {
		logf("helper-gateway: %v %s", err, msg)
		return 1
	}
	return 0
}
