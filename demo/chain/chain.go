package chain

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/bridge/uplink"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/firmware-sim/sim"
)

// DefaultScenario is the embedded 50-sensor mixed fleet (a copy of
// configs/fleet-demo.yaml).
//
//go:embed fleet-demo.yaml
var DefaultScenario []byte

// centralCoAPPort is the central telemetry sink's CoAP port (RFC 7252 §6.1).
const centralCoAPPort = 5683

// Options configure Run.
type Options struct {
	// Duration stops the run by itself (0: until ctx ends).
	Duration time.Duration
	// Scenario is the fleet YAML (default DefaultScenario).
	Scenario []byte
	// StateDir holds the endpoint registry and spool (default: a temp dir,
	// removed at the end).
	StateDir string
	// Logger receives component logs (nil discards).
	Logger *slog.Logger
	// OnUpdate, if set, is called about once a second and at the end with
	// the current view.
	OnUpdate func(View)
	// IPv6 runs the chain over IPv6: the uplink over ::1 only (IKE, ESP),
	// IPV6CP beside IPCP, every endpoint with its IPv6 address in
	// 2001:db8:8::/64, central at 2001:db8:200::10 (telemetry must arrive
	// from the endpoints' IPv6 addresses), sensors dialling the bridge at
	// [::1].
	IPv6 bool
}

// Endpoint is one endpoint's line in the view.
type Endpoint struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Addr     string `json:"addr"`
	// Messages counts telemetry messages seen centrally; From is the
	// source address they arrived from (CoAP: the sink's peer; MQTT: the
	// relay connection's remote address).
	Messages uint64 `json:"messages"`
	From     string `json:"from,omitempty"`
	// FromOwnAddr is true when every message came from Addr.
	FromOwnAddr bool `json:"from_own_addr"`
	// OtherFrom is the last source seen that was not Addr.
	OtherFrom string `json:"other_from,omitempty"`
}

// RoundTrip is the central → device CoAP GET result.
type RoundTrip struct {
	Target string        `json:"target"`
	OK     bool          `json:"ok"`
	RTT    time.Duration `json:"rtt_ns"`
	Result string        `json:"result"`
}

// View is what the demo shows, and its final report.
type View struct {
	Elapsed    time.Duration `json:"elapsed_ns"`
	Uplink     []string      `json:"uplink_phases"`
	UplinkUp   bool          `json:"uplink_up"`
	LocalAddr  string        `json:"ppp_addr,omitempty"`
	GatewaySes int           `json:"gateway_sessions"`
	// Gateway describes the gateway's sessions (from its status report).
	Gateway   []string   `json:"gateway,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
	RoundTrip RoundTrip  `json:"round_trip"`
	// Command is the central → device MQTT command (fleets with MQTT
	// endpoints).
	Command   MQTTCommand `json:"mqtt_command"`
	Reporting int         `json:"endpoints_reporting"`
	Success   bool        `json:"success"`
	Failures  []string    `json:"failures,omitempty"`
}

// state is the shared view, guarded by mu.
type state struct {
	mu     sync.Mutex
	start  time.Time
	phases []string
	up     bool
	local  string
	eps    map[string]*Endpoint
	rt     RoundTrip
	cmd    MQTTCommand
	gw     *gateway
}

func (s *state) onUplink(st uplink.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := fmt.Sprintf("%6.2fs %s", time.Since(s.start).Seconds(), st.State)
	switch {
	case st.State == uplink.StateUp:
		t := st.Tunnel
		line += fmt.Sprintf(" addr %s via %s: IKEv1 Main+Quick Mode, ESP %s (SPI in %08x out %08x), L2TP tunnel %d session %d, PPP %s peer %s",
			st.Addr, st.Gateway, t.Suite, t.InSPI, t.OutSPI, t.L2TPTunnel, t.L2TPSession, t.Auth, t.Peer)
		s.local = st.Addr.String()
	case st.State == uplink.StateConnecting:
		line += fmt.Sprintf(" attempt %d to %s", st.Attempts, st.Gateway)
	case st.LastErr != nil && st.State == uplink.StateBackoff:
		line += fmt.Sprintf(" (%v: %v)", st.LastPhase, st.LastErr)
	}
	s.up = st.State == uplink.StateUp
	s.phases = append(s.phases, line)
}

func (s *state) onSample(name, from string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.eps[name]
	if !ok {
		return
	}
	if e.Messages == 0 {
		e.FromOwnAddr = true
	}
	e.Messages++
	e.From = from
	if from != e.Addr {
		e.FromOwnAddr = false
		e.OtherFrom = from
	}
}

func (s *state) view() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := View{Elapsed: time.Since(s.start), Uplink: append([]string(nil), s.phases...), UplinkUp: s.up, LocalAddr: s.local, RoundTrip: s.rt, Command: s.cmd}
	if s.gw != nil {
		r := s.gw.srv.Report()
		v.GatewaySes = len(r.Sessions)
		for _, x := range r.Sessions {
			v.Gateway = append(v.Gateway, fmt.Sprintf("session %s from %s: PPP %s, routes %v, ESP %s, rx %d / tx %d packets",
				x.Identity, x.Outer, x.VPNAddr, x.Routes, x.Suite, x.RxPackets, x.TxPackets))
		}
	}
	for _, e := range s.eps {
		v.Endpoints = append(v.Endpoints, *e)
		if e.Messages > 0 && e.FromOwnAddr {
			v.Reporting++
		}
	}
	sort.Slice(v.Endpoints, func(i, j int) bool {
		return netip.MustParseAddr(v.Endpoints[i].Addr).Less(netip.MustParseAddr(v.Endpoints[j].Addr))
	})
	return v
}

// finish judges the run: every endpoint's telemetry seen centrally from
// its own address, and the round trip succeeded.
func (v *View) finish() {
	v.Failures = nil
	if !v.UplinkUp {
		v.Failures = append(v.Failures, "uplink not up at the end")
	}
	for _, e := range v.Endpoints {
		switch {
		case e.Messages == 0:
			v.Failures = append(v.Failures, fmt.Sprintf("%s (%s): no telemetry at central", e.Name, e.Addr))
		case !e.FromOwnAddr:
			v.Failures = append(v.Failures, fmt.Sprintf("%s: telemetry from %q, want %s", e.Name, e.OtherFrom, e.Addr))
		}
	}
	if !v.RoundTrip.OK {
		r := v.RoundTrip.Result
		if r == "" {
			r = "not attempted (stopped before the uplink came up)"
		}
		v.Failures = append(v.Failures, "central → device round trip: "+r)
	}
	hasMQTT := false
	for _, e := range v.Endpoints {
		hasMQTT = hasMQTT || e.Protocol == "mqtt"
	}
	if hasMQTT && !v.Command.OK {
		r := v.Command.Reply
		if r == "" {
			r = "not attempted (stopped before the uplink came up)"
		}
		v.Failures = append(v.Failures, "central → device MQTT command: "+r)
	}
	v.Success = len(v.Failures) == 0 && len(v.Endpoints) > 0
}

// Run runs the chain until ctx ends or opts.Duration passes and returns the
// final view; err is set only when the chain could not be built.
func Run(ctx context.Context, opts Options) (View, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	dir := opts.StateDir
	if dir == "" {
		d, err := os.MkdirTemp("", "fleetgate-demo-")
		if err != nil {
			return View{}, fmt.Errorf("demo: state dir: %w", err)
		}
		defer func() { _ = os.RemoveAll(d) }()
		dir = d
	}
	scYAML := opts.Scenario
	if scYAML == nil {
		scYAML = DefaultScenario
	}
	sc, err := scenario.Parse(bytes.NewReader(scYAML))
	if err != nil {
		return View{}, fmt.Errorf("demo: scenario: %w", err)
	}
	sc.Duration = 0 // the chain's context bounds the fleet
	st := &state{start: time.Now(), eps: map[string]*Endpoint{}}

	// Central gateway and its services.
	gctx, gcancel := context.WithCancel(context.Background())
	g, err := startGateway(gctx, log, opts.IPv6)
	if err != nil {
		gcancel()
		return View{}, err
	}
	defer func() {
		gcancel()
		if err := g.wait(20 * time.Second); err != nil {
			log.Warn("demo: gateway stop", "err", err)
		}
	}()
	st.gw = g
	col := collector.New(collector.Config{
		Logger: log.With("component", "collector"),
		OnTelemetry: func(s collector.Sample) {
			if s.Source == "mqtt" {
				return // the central broker's hook records the connection's address
			}
			if s.Source == "coap" {
				if ap, err := netip.ParseAddrPort(s.From); err == nil {
					st.onSample(s.Telemetry.Device, ap.Addr().String())
					return
				}
			}
			st.onSample(s.Telemetry.Device, s.From)
		},
	})
	central := g.central
	sinkConn, err := g.stack.ListenUDP(netip.AddrPortFrom(central, centralCoAPPort))
	if err != nil {
		return View{}, fmt.Errorf("demo: central CoAP sink: %w", err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); _ = col.NewDatagramSink().Serve(sctx, sinkConn) }()
	defer func() { scancel(); <-sinkDone }()

	// MQTT: the central broker in the gateway's stack (before the bridge,
	// so its relay connects at once).
	replies := make(chan commandReply, 8)
	cb, err := startCentralBroker(g, col, st.onSample, replies, log.With("component", "central-mqtt"))
	if err != nil {
		return View{}, err
	}
	defer func() { _ = cb.Close() }()

	// Edge bridge: the bridge daemon's own composition (bridge/daemon.Site)
	// with the endpoints of the fleet provisioned into its registry.
	cfg, err := siteConfig(g, dir)
	if err != nil {
		return View{}, err
	}
	ca, err := siteCA(cfg)
	if err != nil {
		return View{}, err
	}
	fleet, err := sim.NewFleet(sc, sim.Options{CA: ca})
	if err != nil {
		return View{}, fmt.Errorf("demo: fleet: %w", err)
	}
	if err := provision(cfg, fleet, st, opts.IPv6); err != nil {
		return st.view(), err
	}
	site, err := daemon.New(cfg, log.With("component", "bridge"))
	if err != nil {
		return st.view(), fmt.Errorf("demo: bridge: %w", err)
	}
	defer func() { _ = site.Close() }() // uplink (PPP, L2TP, IKE) torn down last
	watchUplink(site, st)
	site.Start()
	if err := waitUp(ctx, site); err != nil {
		if ctx.Err() != nil {
			v := st.view()
			v.finish()
			return v, nil // stopped (Ctrl-C) before the uplink came up
		}
		return st.view(), err
	}
	reg := site.Registry()
	addrs := site.Addrs()

	// The fleet, pointed at the bridge.
	fleet, err = sim.NewFleet(sc, sim.Options{
		Creds: fleet.Creds(), CA: ca, RootCAs: ca.Pool, Collector: col,
		CoAPTarget: addrs.CoAP.String(), MQTTTarget: addrs.MQTTTLS.String(), Drain: time.Second,
		Logger: log.With("component", "fleet"),
	})
	if err != nil {
		return st.view(), fmt.Errorf("demo: fleet: %w", err)
	}
	fctx, fcancel := context.WithCancel(ctx)
	fleetDone := make(chan *report.Report, 1)
	go func() {
		rep, err := fleet.Run(fctx)
		if err != nil {
			log.Warn("demo: fleet", "err", err)
		}
		fleetDone <- rep
	}()
	defer func() { fcancel(); <-fleetDone }()

	// Central → device round trip once the target's telemetry has arrived.
	rtTarget := firstCoAPPSK(reg)
	if opts.IPv6 {
		rtTarget.Addr = rtTarget.Addr6 // central → [endpoint v6]:5683
	}
	rtDone := make(chan struct{})
	go func() {
		defer close(rtDone)
		roundTripLoop(ctx, g, st, rtTarget)
	}()
	defer func() { <-rtDone }()
	cmdDone := make(chan struct{})
	go func() {
		defer close(cmdDone)
		mt := firstMQTT(reg)
		if opts.IPv6 {
			mt.Addr = mt.Addr6
		}
		commandLoop(ctx, cb, st, mt, replies)
	}()
	defer func() { <-cmdDone }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			v := st.view()
			v.finish()
			if opts.OnUpdate != nil {
				opts.OnUpdate(v)
			}
			return v, nil
		case <-tick.C:
			if opts.OnUpdate != nil {
				opts.OnUpdate(st.view())
			}
		}
	}
}

// provision adds every simulated device to the bridge's endpoint registry
// (state_dir/endpoints.json, as `bridge endpoint add` does): CoAP devices
// by PSK identity or certificate CN, MQTT devices with their password as
// the registry PSK (the site broker's RegistryAuth).
func provision(cfg *bconfig.Config, fleet *sim.Fleet, st *state, v6 bool) error {
	reg, _, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return fmt.Errorf("demo: registry: %w", err)
	}
	protoOf := map[string]string{}
	for _, d := range fleet.Devices() {
		c := d.Config()
		protoOf[c.Name] = string(c.Protocol)
	}
	for _, n := range fleet.Creds().Names() {
		e, _ := fleet.Creds().Get(n)
		var ep registry.Endpoint
		switch {
		case protoOf[n] == "mqtt":
			ep = registry.Endpoint{Name: n, Protocol: registry.MQTT, PSKIdentity: e.Identity, PSK: e.Secret}
		case e.Cert != nil:
			ep = registry.Endpoint{Name: n, Protocol: registry.CoAP, CertCN: e.Identity}
		default:
			ep = registry.Endpoint{Name: n, Protocol: registry.CoAP, PSKIdentity: e.Identity, PSK: e.Secret}
		}
		added, err := reg.Add(ep)
		if err != nil {
			return fmt.Errorf("demo: register %s: %w", n, err)
		}
		st.mu.Lock()
		a := added.Addr
		if v6 {
			a = added.Addr6 // telemetry must come from the IPv6 address
		}
		st.eps[n] = &Endpoint{Name: n, Protocol: protoOf[n], Addr: a.String()}
		st.mu.Unlock()
	}
	return nil
}

// firstMQTT picks the MQTT command target: the MQTT endpoint with the
// lowest address.
func firstMQTT(reg *registry.Registry) registry.Endpoint {
	var best registry.Endpoint
	for _, e := range reg.List() {
		if e.Protocol == registry.MQTT && (!best.Addr.IsValid() || e.Addr.Less(best.Addr)) {
			best = e
		}
	}
	return best
}

// firstCoAPPSK picks the round-trip target: the first always-awake PSK
// CoAP endpoint.
func firstCoAPPSK(reg *registry.Registry) registry.Endpoint {
	var best registry.Endpoint
	for _, e := range reg.List() {
		if e.Protocol != registry.CoAP || e.PSKIdentity == "" {
			continue
		}
		if !best.Addr.IsValid() || e.Addr.Less(best.Addr) {
			best = e
		}
	}
	return best
}
