package e2e

// The field soak (issue 16): the real gateway and bridge in namespaces,
// CoAP devices (firmware-sim's device, in sensors; zero-length and 8-byte
// tokens; spool and passthrough paths) and MQTT devices (QoS 1 and 2)
// sending throughout: a 60 s WAN cut during which the bridge is killed
// (SIGKILL) and restarted and then the gateway is killed and restarted,
// then 20 % packet loss on the WAN. Central (firmware-sim's collector
// behind a CoAP datagram sink, mosquitto + a paho subscriber for MQTT)
// counts by device sequence number.
//
// Why TestCoapUplinkRecovery missed the bug: its device sent nothing
// during the outage (so no upstream exchange ever failed) and its go-coap
// client always used a token, while the proxy then sent upstream whatever
// token the device used — a failed tokenless exchange poisoned the
// endpoint's upstream conn for good. Here devices keep sending through
// every fault, half of them with zero-length tokens.
//
// TestSoak is the short version (one cycle, ≈ 3 min, in make test);
// TestSoakLong repeats the cycle for -soak.duration (make bench runs it for
// 30 min and writes -soak.report for docs/BENCHMARKS.md).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	simcollector "github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

var (
	soakDuration = flag.Duration("soak.duration", 0, "TestSoakLong: run fault cycles for this long (0: skip)")
	soakReport   = flag.String("soak.report", "", "TestSoak*: write the figures as JSON to this file")
)

// soakPlan is one fault cycle.
type soakPlan struct {
	Warm       time.Duration // traffic before the cut
	Cut        time.Duration // WAN cut
	BridgeKill time.Duration // into the cut: SIGKILL the bridge, restart 5 s later
	GwKill     time.Duration // into the cut: SIGKILL the gateway, restart 5 s later
	Calm       time.Duration // after the uplink is back, before the loss
	Loss       time.Duration // 20 % loss on the WAN
	LossPct    int
}

// soakCoAP is one CoAP device of the soak.
type soakCoAP struct {
	name      string
	spool     bool // /telemetry (spool) or /alarms (passthrough)
	zeroToken bool
	ep        *Endpoint
	dev       *device.Device

	mu          sync.Mutex
	acked       map[uint64]bool
	unavailable map[uint64]bool
}

// SoakDevice is one device's line of the soak report.
type SoakDevice struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Sent        int64  `json:"sent"`
	Acked       int64  `json:"acked"`
	AtCentral   int64  `json:"at_central"`
	Lost        int64  `json:"lost"`       // acknowledged to the device, missing at central
	Duplicated  int64  `json:"duplicated"` // delivered more than once (not device re-sends)
	Unavailable int64  `json:"unavailable_503,omitempty"`
	// Refused503Delivered: answered 5.03 after a failed passthrough
	// exchange whose request did reach central (its answer was lost).
	Refused503Delivered int64 `json:"refused_503_delivered,omitempty"`
	TimedOut            int64 `json:"timed_out,omitempty"` // no answer (bridge killed)
	Handshakes          int64 `json:"handshakes,omitempty"`
}

// SoakReport is what TestSoak* print and write.
type SoakReport struct {
	Duration   string       `json:"duration"`
	PlanText   string       `json:"plan"`
	Cycles     int          `json:"cycles"`
	Devices    []SoakDevice `json:"devices"`
	FirstCoAP  []string     `json:"uplink_back_to_first_coap"`
	Retransmit float64      `json:"coap_spool_retransmits"`
	Replaced   float64      `json:"proxy_upstream_replaced"`
	Plan       soakPlan     `json:"-"`
	firstCoAP  []time.Duration
}

func TestSoak(t *testing.T) {
	t.Parallel()
	runSoak(t, soakPlan{Warm: 8 * time.Second, Cut: 60 * time.Second, BridgeKill: 10 * time.Second, GwKill: 25 * time.Second,
		Calm: 5 * time.Second, Loss: 40 * time.Second, LossPct: 20}, 0)
}

func TestSoakLong(t *testing.T) {
	testenv.OptIn(t, *soakDuration > 0, "-soak.duration (make bench: 30m)")
	runSoak(t, soakPlan{Warm: 10 * time.Second, Cut: 60 * time.Second, BridgeKill: 15 * time.Second, GwKill: 35 * time.Second,
		Calm: 10 * time.Second, Loss: 2 * time.Minute, LossPct: 20}, *soakDuration)
}

// TestSoakReportJSON writes a fixed soak report to -soak.report (if
// given): bench -quick runs it to exercise the soak suite's report path
// without the soak itself (TestSoak runs in make test anyway).
func TestSoakReportJSON(t *testing.T) {
	rep := SoakReport{Duration: "0s", PlanText: "format check only (bench -quick); the soak is TestSoak", Cycles: 1,
		Devices:   []SoakDevice{{Name: "sp-zero", Kind: "coap spool, zero-length token", Sent: 1, Acked: 1, AtCentral: 1, Handshakes: 1}},
		FirstCoAP: []string{"0s"}}
	j, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(j, &back); err != nil || back["plan"] == nil || back["devices"] == nil || back["uplink_back_to_first_coap"] == nil {
		t.Fatalf("report JSON %s: %v", j, err)
	}
	if *soakReport != "" {
		if err := os.WriteFile(*soakReport, j, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// killGateway SIGKILLs the gateway (a crash; its sessions are lost).
func (e *Env) killGateway() {
	e.T.Helper()
	e.mu.Lock()
	p := e.gw
	e.gw = nil
	e.mu.Unlock()
	if p == nil {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		e.T.Fatalf("e2e: gateway %d did not die from SIGKILL", p.PID)
	}
}

func runSoak(t *testing.T, plan soakPlan, total time.Duration) {
	start := time.Now()
	mqttNames := []string{"mq-q1", "mq-q2"}
	coapDevs := []*soakCoAP{
		{name: "sp-zero", spool: true, zeroToken: true},
		{name: "sp-tok", spool: true},
		{name: "pt-zero", zeroToken: true},
		{name: "pt-tok"},
	}
	// The mqtt extra ends the mqtt: section; coap_spool follows at top level.
	extra := "coap_spool:\n  paths: {/telemetry: spool, /alarms: passthrough}\n  retry_after: 5s\n"
	m := setupMQTTWith(t, mqttNames, extra, func(m *mqttEnv) {
		for _, d := range coapDevs {
			d.ep = m.provision(EndpointSpec{Name: d.name})
		}
	})
	for _, d := range coapDevs {
		d.ep = m.Endpoint(d.name)
	}
	var meps []*Endpoint
	for _, n := range mqttNames {
		meps = append(meps, m.Endpoint(n))
	}
	m.waitCentralSessions(t, meps, 30*time.Second)
	col := m.startCollector(t)

	// Central CoAP: firmware-sim's collector behind a datagram sink
	// (deduplicates CON retransmissions by source and Message ID).
	var arrMu sync.Mutex
	var arrivals []time.Time
	coapCol := simcollector.New(simcollector.Config{OnTelemetry: func(s simcollector.Sample) {
		arrMu.Lock()
		arrivals = append(arrivals, s.At)
		arrMu.Unlock()
	}})
	pc, err := m.Central.ListenPacket("udp4", netip.AddrPortFrom(CentralAddr, 5683).String())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); _ = coapCol.NewDatagramSink().Serve(ctx, pc) }()
	t.Cleanup(func() { pc.Close(); <-sinkDone })
	firstAfter := func(t0 time.Time) (time.Time, bool) {
		arrMu.Lock()
		defer arrMu.Unlock()
		for _, a := range arrivals {
			if !a.Before(t0) {
				return a, true
			}
		}
		return time.Time{}, false
	}

	// CoAP devices in sensors: 1 message/s; an exchange without any answer
	// for ≈ 35 s (1.5 s ACK timeout, 3 retransmissions) makes the device
	// handshake again (the bridge was killed).
	listen := func(laddr *net.UDPAddr) (*net.UDPConn, error) {
		pc, err := m.Sensors.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return nil, err
		}
		return pc.(*net.UDPConn), nil
	}
	runCtx, stopDevices := context.WithCancel(context.Background())
	var devWG sync.WaitGroup
	for _, d := range coapDevs {
		d.acked, d.unavailable = map[uint64]bool{}, map[uint64]bool{}
		path := "/alarms"
		if d.spool {
			path = "/telemetry"
		}
		dev, err := device.New(device.Config{
			Name: d.name, Protocol: device.CoAP, Target: netip.AddrPortFrom(BridgeLAN, CoAPSPort).String(), Path: path,
			Creds:  &creds.Entry{Name: d.name, Kind: creds.KindPSK, Identity: d.ep.Identity, Secret: []byte(d.ep.PSK)},
			Format: senml.FormatJSON, Interval: time.Second, Confirmable: true, ZeroToken: d.zeroToken,
			AckTimeout: 1500 * time.Millisecond, MaxRetransmit: 3, FailuresBeforeReconnect: 1,
			BackoffMin: 500 * time.Millisecond, BackoffMax: 2 * time.Second, Listen: listen, DrainTimeout: 40 * time.Second,
			OnResult: func(seq uint64, acked bool) {
				d.mu.Lock()
				if acked {
					d.acked[seq] = true
				}
				d.mu.Unlock()
			},
			OnUnavailable: func(seq uint64, _ time.Duration) {
				d.mu.Lock()
				d.unavailable[seq] = true
				d.mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		d.dev = dev
		devWG.Add(1)
		go func() { defer devWG.Done(); _ = dev.Run(runCtx) }()
	}
	t.Cleanup(func() { stopDevices(); devWG.Wait() })
	mqDevs := []*simDevice{m.startDevice(t, meps[0], 1, 500*time.Millisecond), m.startDevice(t, meps[1], 2, 500*time.Millisecond)}

	phase := func(what string) {
		t.Logf("%6.1fs %-34s coap at central %4d, bridge coap_spool_messages %v, mqtt at central %d",
			time.Since(start).Seconds(), what, coapCol.Stats.Messages.Load(), m.metricOr("coap_spool_messages"), col.n.Load())
	}
	rep := &SoakReport{Plan: plan}
	cycle := func() {
		phase("traffic")
		time.Sleep(plan.Warm)
		m.Topo.CutWAN(t)
		cut := time.Now()
		phase("WAN cut")
		time.Sleep(time.Until(cut.Add(plan.BridgeKill)))
		// The spool depth per endpoint, in /status and /metrics.
		if es, ok := m.EndpointStatus("sp-zero"); !ok || es.Spooled == 0 {
			t.Errorf("/status during the outage: sp-zero spooled %d (found %v), want > 0", es.Spooled, ok)
		}
		if v := m.metricOr(`bridge_endpoint_coap_spooled{endpoint="sp-tok"}`); v <= 0 {
			t.Errorf(`bridge_endpoint_coap_spooled{endpoint="sp-tok"} = %v during the outage, want > 0`, v)
		}
		phase("SIGKILL bridge (mid-outage)")
		m.KillBridge()
		time.Sleep(5 * time.Second)
		m.StartBridge()
		phase("bridge restarted")
		time.Sleep(time.Until(cut.Add(plan.GwKill)))
		phase("SIGKILL gateway")
		m.killGateway()
		time.Sleep(5 * time.Second)
		m.StartGateway()
		phase("gateway restarted")
		time.Sleep(time.Until(cut.Add(plan.Cut)))
		m.Topo.RestoreWAN(t)
		restored := time.Now()
		phase("WAN restored")
		var upAt time.Time
		if !Poll(90*time.Second, func() bool {
			st, err := m.status()
			if err == nil && strings.HasPrefix(st.Uplink, "up") {
				upAt = time.Now()
				return true
			}
			return false
		}) {
			t.Fatalf("uplink not up within 90 s after the WAN came back")
		}
		phase("uplink up")
		if !Poll(30*time.Second, func() bool { _, ok := firstAfter(upAt.Add(-time.Second)); return ok }) {
			t.Errorf("no CoAP message at central within 30 s of the uplink being back")
		}
		// The status poll runs every 100 ms: an arrival up to 1 s before
		// it saw "up" counts as 0.
		if a, ok := firstAfter(upAt.Add(-time.Second)); ok {
			d := max(a.Sub(upAt), 0)
			rep.firstCoAP = append(rep.firstCoAP, d)
			t.Logf("uplink back → first CoAP message at central: %v (WAN back → uplink up %v)", d.Round(10*time.Millisecond), upAt.Sub(restored).Round(100*time.Millisecond))
		}
		time.Sleep(plan.Calm)
		m.Topo.Loss(t, "wan", "gw", plan.LossPct)
		phase(fmt.Sprintf("%d %% loss on the WAN", plan.LossPct))
		time.Sleep(plan.Loss)
		m.Topo.Loss(t, "wan", "gw", 0)
		phase("loss removed")
		rep.Cycles++
	}
	cycle()
	for total > 0 && time.Since(start) < total {
		cycle()
	}
	time.Sleep(5 * time.Second)
	stopDevices()
	devWG.Wait()
	for _, d := range mqDevs {
		d.halt()
	}
	phase("devices stopped")
	if !Poll(90*time.Second, func() bool {
		return m.metricOr("coap_spool_messages") == 0 && m.metricOr("spool_messages") == 0
	}) {
		t.Errorf("spools not drained within 90 s: coap %v, mqtt %v", m.metricOr("coap_spool_messages"), m.metricOr("spool_messages"))
	}
	Poll(30*time.Second, func() bool {
		for _, d := range mqDevs {
			s := col.seqs(d.ep.Name)
			if len(s) == 0 || slices.Max(s) < d.lastConfirmed() {
				return false
			}
		}
		return true
	})
	phase("drained")

	// CoAP figures.
	for _, d := range coapDevs {
		st, _ := coapCol.Device(d.name)
		sent := d.dev.Stats.Sent.Load()
		r := SoakDevice{Name: d.name, Sent: int64(sent), Duplicated: int64(st.Duplicates), AtCentral: int64(st.Unique),
			Handshakes: int64(d.dev.Stats.Handshakes.Load())}
		r.Kind = "coap passthrough"
		if d.spool {
			r.Kind = "coap spool"
		}
		if d.zeroToken {
			r.Kind += ", zero-length token"
		} else {
			r.Kind += ", 8-byte token"
		}
		d.mu.Lock()
		var lost []uint64
		for seq := uint64(1); seq <= sent; seq++ {
			at := coapCol.Has(d.name, seq)
			switch {
			case d.acked[seq]:
				r.Acked++
				if !at {
					lost = append(lost, seq)
				}
			case d.unavailable[seq]:
				r.Unavailable++
				if at {
					r.Refused503Delivered++
				}
			default: // no answer at all: the device knows it failed
				r.TimedOut++
			}
		}
		d.mu.Unlock()
		r.Lost = int64(len(lost))
		rep.Devices = append(rep.Devices, r)
		if len(lost) > 0 {
			t.Errorf("%s: %d messages acknowledged to the device are missing at central: %v", d.name, len(lost), lost)
		}
		if st.Duplicates > 0 {
			t.Errorf("%s: %d duplicates at central", d.name, st.Duplicates)
		}
		if r.Handshakes > int64(2*rep.Cycles) {
			t.Errorf("%s: %d DTLS handshakes in %d cycles, want ≤ 2 per cycle (one bridge restart each)", d.name, r.Handshakes, rep.Cycles)
		}
		if d.spool && r.Unavailable > 0 {
			t.Errorf("%s: spooled telemetry answered 5.03 %d times (the spool is far from full)", d.name, r.Unavailable)
		}
		// A device without an answer is one whose session died with the
		// killed bridge: at most the message in flight and the one that
		// found the session dead, per bridge kill.
		if r.TimedOut > int64(2*rep.Cycles) {
			t.Errorf("%s: %d exchanges without any answer in %d cycles, want ≤ 2 per bridge kill", d.name, r.TimedOut, rep.Cycles)
		}
		if !d.spool && r.Unavailable == 0 {
			t.Errorf("%s: passthrough device never saw a 5.03 during the outage", d.name)
		}
		if r.Acked < int64(20*rep.Cycles) {
			t.Errorf("%s: only %d acknowledged: the scenario did not run", d.name, r.Acked)
		}
	}
	// MQTT figures (QoS 1 is at least once: its duplicates are reported,
	// QoS 2's are failures).
	for _, d := range mqDevs {
		got := col.seqs(d.ep.Name)
		count := map[int64]int{}
		for _, s := range got {
			count[s]++
		}
		acked := d.acked.Load()
		r := SoakDevice{Name: d.ep.Name, Kind: fmt.Sprintf("mqtt QoS %d", d.qos), Sent: acked, Acked: acked, AtCentral: int64(len(count))}
		for s := int64(1); s <= acked; s++ {
			switch {
			case !d.confirmed(s):
			case count[s] == 0:
				r.Lost++
			case count[s] > 1:
				if _, ok := d.retried.Load(s); !ok {
					r.Duplicated += int64(count[s] - 1)
				}
			}
		}
		rep.Devices = append(rep.Devices, r)
		if r.Lost > 0 {
			t.Errorf("%s: %d acknowledged messages lost", d.ep.Name, r.Lost)
		}
		if d.qos == 2 && r.Duplicated > 0 {
			t.Errorf("%s: QoS 2 delivered %d duplicates", d.ep.Name, r.Duplicated)
		}
	}
	rep.Retransmit = m.metricOr("coap_spool_retransmits_total")
	rep.Replaced = m.metricOr("proxy_upstream_replaced_total")
	rep.Duration = time.Since(start).Round(time.Second).String()
	rep.PlanText = fmt.Sprintf("%d cycle(s) of a %v WAN cut with the bridge SIGKILLed at +%v (restarted 5 s later) and the gateway at +%v (restarted 5 s later), then %d %% WAN loss for %v; 4 CoAP devices at 1 msg/s, 2 MQTT devices at 2 msg/s",
		rep.Cycles, plan.Cut, plan.BridgeKill, plan.GwKill, plan.LossPct, plan.Loss)
	for _, d := range rep.firstCoAP {
		rep.FirstCoAP = append(rep.FirstCoAP, d.Round(10*time.Millisecond).String())
		if d > 10*time.Second {
			t.Errorf("first CoAP message at central %v after the uplink was back, want ≤ 10 s", d)
		}
	}
	sort.Slice(rep.Devices, func(i, j int) bool { return rep.Devices[i].Name < rep.Devices[j].Name })
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %s, %d cycle(s) (WAN cut %v with bridge and gateway SIGKILL, %d %% loss for %v)\n",
		rep.Duration, rep.Cycles, plan.Cut, plan.LossPct, plan.Loss)
	fmt.Fprintf(&b, "  %-8s %-36s %6s %6s %7s %5s %5s %5s %8s %5s\n", "device", "kind", "sent", "acked", "central", "lost", "dup", "5.03", "timeouts", "hs")
	for _, r := range rep.Devices {
		fmt.Fprintf(&b, "  %-8s %-36s %6d %6d %7d %5d %5d %5d %8d %5d\n", r.Name, r.Kind, r.Sent, r.Acked, r.AtCentral, r.Lost, r.Duplicated, r.Unavailable, r.TimedOut, r.Handshakes)
	}
	fmt.Fprintf(&b, "  uplink back → first CoAP message at central: %v; spool retransmissions %v; upstream conns replaced %v",
		rep.FirstCoAP, rep.Retransmit, rep.Replaced)
	t.Log(b.String())
	if *soakReport != "" {
		j, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*soakReport, j, 0o644); err != nil {
			t.Error(err)
		}
	}
}
