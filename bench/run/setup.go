package run

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// setupSample brings up n complete sessions one after another (Main Mode,
// Quick Mode, L2TP, PPP, IPCP), closing each once it is up; cc makes a
// fresh client config (new sockets) per session. Only the set-ups are
// timed (and their CPU counted), not the graceful closes between them.
func setupSample(n int, cc func() tunnel.ClientConfig, extraCPU func() time.Duration) (Sample, error) {
	var el, cpu time.Duration
	for i := range n {
		c := cc()
		cpu0, x0 := cpuTime(), extraCPU()
		t0 := time.Now()
		tn, err := dialTunnel(c)
		el += time.Since(t0)
		cpu += cpuTime() - cpu0 + extraCPU() - x0
		if err != nil {
			closeConns(c)
			return Sample{}, fmt.Errorf("session %d: %w", i, err)
		}
		_ = tn.Close()
		closeConns(c)
	}
	return Sample{Rate: float64(n) / el.Seconds(), CPUPerOp: cpu / time.Duration(n)}, nil
}

func closeConns(c tunnel.ClientConfig) {
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
		g := startOurGateway(t, gwh, 2)
		names := []string{"ours MODP-2048", "ours ECP-256"}
		runs := []func() (Sample, error){
			func() (Sample, error) {
				return setupSample(o.Setups, func() tunnel.ClientConfig {
					return g.clientConfig(t, edge, 0, "aes128-sha1-modp2048", "aes128-sha1")
				}, zeroCPU)
			},
			func() (Sample, error) {
				return setupSample(o.Setups, func() tunnel.ClientConfig {
					return g.clientConfig(t, edge, 1, "aes128-sha256-ecp256", "aes128-sha1")
				}, zeroCPU)
			},
		}
		if rootOK {
			if reason := skipReason(func(t testing.TB) { testenv.RequireBinary(t, "vpnserver") }); reason != "" {
				rep.note("set-up: SoftEther skipped: %s", reason)
			} else {
				se := realpeer.StartSoftEther(t, gwh, realpeer.SoftEtherConfig{PSK: benchPSK, Users: map[string]string{"site1": "pw1"}})
				names = append(names, "SoftEther MODP-2048")
				runs = append(runs, func() (Sample, error) {
					return setupSample(o.Setups, func() tunnel.ClientConfig {
						return tunnel.ClientConfig{
							Gateway: netip.AddrPortFrom(gwh.Addr, 500).String(),
							IKEConn: listenIn(t, edge), NATTConn: listenIn(t, edge),
							PSK:        []byte(benchPSK),
							IKEOptions: tunnel.IKEOptions{IKEProposals: "aes128-sha1-modp2048", ESPProposals: "aes128-sha1", DPDInterval: -1},
							Username:   "site1", Password: "pw1",
						}
					}, func() time.Duration { return treeCPU(se.Proc.PID) })
				})
			}
		}
		rows := alternate(o.Reps, names, runs)
		rep.add(title, "sessions/s", rows)
		rep.ratio(title, "ours MODP-2048 / SoftEther MODP-2048 (set-ups/s)", rows, "ours MODP-2048", "SoftEther MODP-2048", 2)
	})
	if err != nil {
		rep.note("set-up failed: %v", err)
	} else if msg != "" {
		rep.note("set-up: %s", msg)
	}
}
