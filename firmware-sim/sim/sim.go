// Package sim runs a simulated fleet described by a scenario: it builds the
// devices and their credentials, runs them, prints the live summary and
// returns the final report. The one-process demo calls Run (or NewFleet +
// Fleet.Run when it must configure its servers with the fleet's
// credentials first).
package sim

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// SeqSource is where true loss comes from: an in-process
// *collector.Collector, or HTTPCollector for a `firmware-sim collect`
// process.
type SeqSource interface {
	// Snapshot returns per-device sequence stats keyed by device name.
	Snapshot() map[string]report.SeqStats
}

// Options adjust a run beyond the scenario.
type Options struct {
	// Logger receives device lifecycle lines; nil discards.
	Logger *slog.Logger
	// Live receives the live summary; nil prints none.
	Live io.Writer
	// Collector gives true loss; nil uses the scenario's collector URL,
	// if any, else loss is computed from acks.
	Collector SeqSource
	// Creds overrides the scenario's credentials source.
	Creds *creds.Set
	// CA issues certificates for cert devices when credentials are
	// generated; nil creates a throwaway CA (see Fleet.CA).
	CA *creds.CA
	// RootCAs verifies the bridge's certificate (else the scenario's
	// ca_file, else CA's pool).
	RootCAs *x509.CertPool
	// CoAPTarget and MQTTTarget override the scenario's targets.
	CoAPTarget, MQTTTarget string
	// BindIP is the devices' source address (nil: any).
	BindIP net.IP
	// AckTimeout and MaxRetransmit override the CoAP defaults
	// (RFC 7252 §4.8).
	AckTimeout    time.Duration
	MaxRetransmit uint32
	// Drain lets exchanges in flight at the end finish (default 5 s).
	Drain time.Duration
	// OnResult, if set, sees every telemetry result (device, seq, acked).
	OnResult func(device string, seq uint64, acked bool)
}

// Fleet is a built, not yet running, set of devices.
type Fleet struct {
	sc      *scenario.Scenario
	opts    Options
	set     *creds.Set
	ca      *creds.CA
	devices []*device.Device

	errMu  sync.Mutex // guards errs
	errs   map[string]int
	start  time.Time
	source SeqSource
}

// Names returns device names in fleet order: "<prefix>-<n>", n counting
// from 1 across all groups.
func Names(sc *scenario.Scenario) []string {
	var out []string
	n := 0
	for _, g := range sc.Groups {
		for i := 0; i < g.Count; i++ {
			n++
			out = append(out, g.Prefix+"-"+strconv.Itoa(n))
		}
	}
	return out
}

// NewFleet builds the devices and their credentials.
func NewFleet(sc *scenario.Scenario, opts Options) (*Fleet, error) {
	if opts.Drain == 0 {
		opts.Drain = 5 * time.Second
	}
	f := &Fleet{sc: sc, opts: opts, errs: map[string]int{}}
	names := Names(sc)
	if err := f.buildCreds(names); err != nil {
		return nil, err
	}
	roots := opts.RootCAs
	if roots == nil && sc.Target.CAFile != "" {
		pemb, err := os.ReadFile(resolve(sc.Dir, sc.Target.CAFile))
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemb) {
			return nil, fmt.Errorf("sim: no certificate in %s", sc.Target.CAFile)
		}
	}
	if roots == nil && f.ca != nil {
		roots = f.ca.Pool
	}
	coapT, mqttT := sc.Target.CoAP, sc.Target.MQTT
	if opts.CoAPTarget != "" {
		coapT = opts.CoAPTarget
	}
	if opts.MQTTTarget != "" {
		mqttT = opts.MQTTTarget
	}
	rng := rand.New(rand.NewPCG(uint64(sc.Seed), 3))
	idx := 0
	for _, g := range sc.Groups {
		format, _ := senml.ParseFormat(g.Format)
		for i := 0; i < g.Count; i++ {
			name := names[idx]
			idx++
			e, err := f.set.Get(name)
			if err != nil {
				return nil, fmt.Errorf("sim: %w", err)
			}
			cfg := device.Config{
				Name: name, Group: g.Name, Index: idx, Protocol: device.Protocol(g.Protocol),
				Path: sc.Target.CoAPPath, PUT: sc.Target.CoAPMethod == "put", Topic: sc.Target.MQTTTopic, Creds: e,
				ReplyPrefix: sc.Target.MQTTReplyPrefix,
				Suite:       g.Suite, CID: g.CID, ZeroToken: g.ZeroToken, Format: format, Interval: g.Interval,
				Confirmable: g.IsConfirmable(), LossPercent: g.Faults.LossPercent,
				RebindEvery: g.Faults.RebindEvery, BackoffMin: g.Reconnect.Min, BackoffMax: g.Reconnect.Max,
				AckTimeout: opts.AckTimeout, MaxRetransmit: opts.MaxRetransmit,
				RootCAs: roots, ServerName: sc.Target.ServerName, InsecureSkipVerify: sc.Target.InsecureSkipVerify,
				BindIP: opts.BindIP, StartDelay: time.Duration(rng.Int64N(int64(g.Interval))),
				Seed: uint64(sc.Seed)<<20 ^ uint64(idx), Logger: opts.Logger, OnError: f.noteErr,
				DrainTimeout: opts.Drain,
			}
			if g.Sleep != nil {
				cfg.Awake = g.Sleep.Awake
			}
			if sc.Target.MQTTCommands != "off" {
				cfg.CommandTopic = sc.Target.MQTTCommands
			}
			if cfg.Protocol == device.CoAP {
				cfg.Target = coapT
			} else {
				cfg.Target = mqttT
			}
			if opts.OnResult != nil {
				cb, n := opts.OnResult, name
				cfg.OnResult = func(seq uint64, acked bool) { cb(n, seq, acked) }
			}
			d, err := device.New(cfg)
			if err != nil {
				return nil, fmt.Errorf("sim: %w", err)
			}
			f.devices = append(f.devices, d)
		}
	}
	f.source = opts.Collector
	if f.source == nil && sc.Collector.URL != "" {
		f.source = &HTTPCollector{URL: sc.Collector.URL}
	}
	return f, nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

// buildCreds loads or generates an identity per device: PSKs (coap/psk),
// passwords (mqtt/psk, as creds.KindMQTT) and CA-issued P-256 certificates
// (auth: cert).
func (f *Fleet) buildCreds(names []string) error {
	switch {
	case f.opts.Creds != nil:
		f.set = f.opts.Creds
		f.ca = f.opts.CA
		return nil
	case f.sc.Credentials.File != "":
		s, err := creds.LoadFile(resolve(f.sc.Dir, f.sc.Credentials.File))
		if err != nil {
			return err
		}
		f.set, f.ca = s, f.opts.CA
		return nil
	}
	f.set = creds.NewSet()
	idx := 0
	for _, g := range f.sc.Groups {
		for i := 0; i < g.Count; i++ {
			name := names[idx]
			idx++
			switch {
			case g.Auth == "cert":
				if f.ca == nil {
					f.ca = f.opts.CA
				}
				if f.ca == nil {
					ca, err := creds.NewCA("firmware-sim CA")
					if err != nil {
						return err
					}
					f.ca = ca
				}
				if err := f.ca.IssueFleet(f.set, []string{name}); err != nil {
					return err
				}
			default:
				kind := creds.KindPSK
				if g.Protocol == "mqtt" {
					kind = creds.KindMQTT
				}
				one, err := creds.Generate(f.sc.Credentials.Seed, kind, []string{name})
				if err != nil {
					return err
				}
				e, _ := one.Get(name)
				if err := f.set.Add(*e); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Creds returns the fleet's credentials (for configuring the server side).
func (f *Fleet) Creds() *creds.Set { return f.set }

// CA returns the CA that issued generated device certificates, or nil.
func (f *Fleet) CA() *creds.CA { return f.ca }

// Devices returns the devices in fleet order.
func (f *Fleet) Devices() []*device.Device { return f.devices }

const maxErrKinds = 20

func (f *Fleet) noteErr(err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	msg := err.Error()
	if _, ok := f.errs[msg]; ok || len(f.errs) < maxErrKinds {
		f.errs[msg]++
	}
}

// Line returns the current live-summary snapshot.
func (f *Fleet) Line() report.Line {
	var tot report.Stats
	var groups []report.GroupLine
	var gstats []*report.Stats
	for _, d := range f.devices {
		tot.Add(&d.Stats)
		cfg := d.Config()
		if n := len(groups); n == 0 || groups[n-1].Name != cfg.Group {
			groups = append(groups, report.GroupLine{Name: cfg.Group, Protocol: string(cfg.Protocol)})
			gstats = append(gstats, &report.Stats{})
		}
		groups[len(groups)-1].Devices++
		gstats[len(gstats)-1].Add(&d.Stats)
	}
	for i := range groups {
		groups[i].Totals = report.CountersOf(gstats[i])
	}
	l := report.Line{Elapsed: time.Since(f.start), Devices: len(f.devices), Totals: report.CountersOf(&tot), Groups: groups}
	if f.source != nil {
		var s report.SeqStats
		for _, v := range f.source.Snapshot() {
			s.Received += v.Received
			s.Unique += v.Unique
			s.Duplicates += v.Duplicates
			s.Reordered += v.Reordered
			s.Gaps += v.Gaps
		}
		l.Collected = &s
	}
	return l
}

// Run runs every device until ctx ends or the scenario's duration passes,
// then returns the report. Live output goes to Options.Live.
func (f *Fleet) Run(ctx context.Context) (*report.Report, error) {
	if len(f.devices) == 0 {
		return nil, errors.New("sim: empty fleet")
	}
	f.start = time.Now()
	if f.sc.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.sc.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, d := range f.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx); err != nil {
				f.noteErr(err)
			}
		}()
	}
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		if f.opts.Live == nil {
			return
		}
		live := report.NewLive(f.opts.Live)
		t := time.NewTicker(f.sc.Report.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				live.Print(f.Line())
			}
		}
	}()
	wg.Wait()
	<-liveDone
	if f.opts.Live != nil {
		report.NewLive(f.opts.Live).Print(f.Line())
	}
	return f.Report(), nil
}

// Report builds the report from the current counters and collector.
func (f *Fleet) Report() *report.Report {
	r := &report.Report{Scenario: f.sc.Name, Started: f.start, Ended: time.Now(), Devices: len(f.devices), LossSource: "acks"}
	r.Seconds = r.Ended.Sub(r.Started).Seconds()
	var collected map[string]report.SeqStats
	if f.source != nil {
		collected = f.source.Snapshot()
		r.LossSource = "collector"
		r.Collected = &report.SeqStats{}
	}
	var tot report.Stats
	for _, d := range f.devices {
		cfg := d.Config()
		tot.Add(&d.Stats)
		dr := report.Device{Name: cfg.Name, Group: cfg.Group, Protocol: string(cfg.Protocol), Counters: report.CountersOf(&d.Stats)}
		if collected != nil {
			c := collected[cfg.Name]
			dr.Collected = &c
			r.Collected.Received += c.Received
			r.Collected.Unique += c.Unique
			r.Collected.Duplicates += c.Duplicates
			r.Collected.Reordered += c.Reordered
			r.Collected.Gaps += c.Gaps
			r.Collected.Highest = max(r.Collected.Highest, c.Highest)
		}
		dr.Lost = report.Lost(dr.Sent, dr.Acked, dr.Collected)
		if (dr.Collected != nil && dr.Collected.Unique > 0) || (dr.Collected == nil && dr.Acked > 0) {
			r.Reporting++
		}
		r.Lost += dr.Lost
		r.PerDevice = append(r.PerDevice, dr)
	}
	r.Totals = report.CountersOf(&tot)
	f.errMu.Lock()
	for msg, n := range f.errs {
		r.Errors = append(r.Errors, fmt.Sprintf("%dx %s", n, msg))
	}
	f.errMu.Unlock()
	sort.Strings(r.Errors)
	return r
}

// Run builds the fleet for sc and runs it: the Go API behind
// `firmware-sim run`.
func Run(ctx context.Context, sc *scenario.Scenario, opts Options) (*report.Report, error) {
	f, err := NewFleet(sc, opts)
	if err != nil {
		return nil, err
	}
	return f.Run(ctx)
}
