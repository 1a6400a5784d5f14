package daemon

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/bridge/uplink"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/internal/secretfile"
	"github.com/fleetgate/fleetgate/internal/statuspage"
)

// uplinkHistory is how many uplink state changes the page keeps.
const uplinkHistory = 64

// pageState is what the status page keeps that the daemon otherwise
// does not: uplink history, when each endpoint was last seen (it outlives
// the DTLS session), per-endpoint rates, chart samples. Every map is
// keyed by configured endpoint names and pruned to the registry at each
// sample, so it is bounded by the configuration.
type pageState struct {
	page *statuspage.Page
	smp  *statuspage.Sampler
	hist *statuspage.Ring[fleetview.UplinkEvent]

	mu       sync.Mutex
	lastSeen map[string]time.Time
	prev     map[string][2]uint64 // bytes in, out at the last sample
	rate     map[string][2]float64
	prevT    time.Time
	stop     chan struct{}
	done     chan struct{}
}

// newPage builds the status page and registers it on mux; nil when
// status_page.enabled is false.
func (s *Site) newPage(mux *http.ServeMux) error {
	sp := s.cfg.StatusPage
	if !sp.On() {
		return nil
	}
	tok := sp.Token
	if tok == "" && sp.TokenFile != "" { // a config from Parse, not Load
		var err error
		if tok, err = secretfile.Read(sp.TokenFile); err != nil {
			return fmt.Errorf("daemon: status_page.token_file: %w", err)
		}
	}
	ps := &pageState{hist: statuspage.NewRing[fleetview.UplinkEvent](uplinkHistory),
		smp: statuspage.NewSampler(sp.SampleInterval, 0,
			statuspage.SeriesSpec{Name: "from endpoints", Unit: "B/s"}, statuspage.SeriesSpec{Name: "to endpoints", Unit: "B/s"},
			statuspage.SeriesSpec{Name: "reporting", Unit: "endpoints"}),
		lastSeen: map[string]time.Time{}, prev: map[string][2]uint64{}, rate: map[string][2]float64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	var acts map[string]statuspage.Action
	if sp.Actions {
		acts = map[string]statuspage.Action{"remove": s.removeFromPage}
	}
	page, err := statuspage.New(statuspage.Config{Kind: "bridge", Title: s.cfg.Site, Listen: s.cfg.Listen, Token: tok, Actions: acts,
		ClientCerts: sp.ClientCA != "", Logger: s.log, Charts: ps.smp.Charts, ChartTitles: map[string]string{"B/s": "Endpoint traffic", "endpoints": "Endpoints reporting (seen within quiet_after)"},
		Views: map[string]func() any{
			"uplink":    func() any { return s.UplinkView() },
			"endpoints": func() any { return s.EndpointsView() },
		}})
	if err != nil {
		return err
	}
	ps.page = page
	page.Register(mux)
	s.page = ps
	if cu, ok := s.up.(*clientUplink); ok {
		cu.watch(ps.recordUplink)
	}
	return nil
}

// recordUplink adds a state change to the history (the uplink client's
// goroutine; must not block).
func (ps *pageState) recordUplink(st uplink.Status) {
	ev := fleetview.UplinkEvent{Time: st.Since, State: st.State.String(), Gateway: st.Gateway}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	switch {
	case st.State == uplink.StateUp:
		ev.Reason = "tunnel up"
		if st.Tunnel.Suite != "" {
			ev.Reason += ", ESP " + st.Tunnel.Suite
		}
		if st.Addr.IsValid() {
			ev.Reason += ", address " + st.Addr.String()
		}
	case st.LastErr != nil && st.State == uplink.StateBackoff:
		ev.Reason = fmt.Sprintf("%v: %v", st.LastPhase, st.LastErr)
	}
	ps.hist.Add(ev)
}

// runSampler samples the endpoints every status_page.sample_interval
// until Close.
func (s *Site) runSampler() {
	ps := s.page
	defer close(ps.done)
	t := time.NewTicker(s.cfg.StatusPage.SampleInterval)
	defer t.Stop()
	s.sample(time.Now())
	for {
		select {
		case <-ps.stop:
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

// sample records last-seen times, per-endpoint rates and a chart point.
func (s *Site) sample(now time.Time) {
	ps := s.page
	st := s.Status()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	dt := now.Sub(ps.prevT)
	var in, out float64
	reporting := 0
	quiet := s.cfg.StatusPage.QuietAfter
	keep := map[string]bool{}
	for _, e := range st.Endpoints {
		keep[e.Name] = true
		seen := e.LastSeen
		if e.Online && e.Protocol == string(registry.MQTT) {
			seen = now // a connected MQTT client is seen (keepalives)
		}
		if seen.After(ps.lastSeen[e.Name]) {
			ps.lastSeen[e.Name] = seen
		}
		if t := ps.lastSeen[e.Name]; !t.IsZero() && now.Sub(t) <= quiet {
			reporting++
		}
		var r [2]float64
		if p, ok := ps.prev[e.Name]; ok && !ps.prevT.IsZero() {
			r = [2]float64{statuspage.Rate(p[0], e.BytesIn, dt), statuspage.Rate(p[1], e.BytesOut, dt)}
		}
		ps.prev[e.Name] = [2]uint64{e.BytesIn, e.BytesOut}
		ps.rate[e.Name] = r
		in += r[0]
		out += r[1]
	}
	for k := range ps.lastSeen {
		if !keep[k] {
			delete(ps.lastSeen, k)
		}
	}
	for k := range ps.prev {
		if !keep[k] {
			delete(ps.prev, k)
			delete(ps.rate, k)
		}
	}
	ps.prevT = now
	ps.smp.Add(now, in, out, float64(reporting))
}

// UplinkView is the uplink view with its history (status page, CLI
// --json).
func (s *Site) UplinkView() fleetview.Uplink {
	now := time.Now()
	v := fleetview.Uplink{Now: now, State: "none", Detail: s.up.State(), History: []fleetview.UplinkEvent{}}
	if cu, ok := s.up.(*clientUplink); ok {
		st := cu.Status()
		v.State, v.Since, v.Gateway, v.Suite = st.State.String(), st.Since, st.Gateway, st.Tunnel.Suite
		v.Attempts, v.Failures, v.Connects = st.Attempts, st.Failures, st.Connects
		if st.Addr.IsValid() {
			v.Addr = st.Addr.String()
		}
		if st.Tunnel.IPv6 {
			v.IPv6CP, v.LinkLocal6 = true, st.Tunnel.LinkLocal6.String()
		}
	}
	if s.page != nil {
		h, _ := s.page.hist.Newest()
		end := now
		for _, ev := range h {
			ev.DurationSeconds = int64(end.Sub(ev.Time).Seconds())
			end = ev.Time
			v.History = append(v.History, ev)
		}
	}
	return v
}

// EndpointsView is the endpoints view (status page, CLI --json).
func (s *Site) EndpointsView() fleetview.Endpoints {
	now := time.Now()
	st := s.Status()
	quiet := s.cfg.StatusPage.QuietAfter
	v := fleetview.Endpoints{Now: now, QuietAfterSeconds: int64(quiet.Seconds()), Endpoints: make([]fleetview.Endpoint, 0, len(st.Endpoints))}
	var ps *pageState
	if s.page != nil {
		ps = s.page
		ps.mu.Lock()
		defer ps.mu.Unlock()
	}
	for _, e := range st.Endpoints {
		ep := fleetview.Endpoint{Name: e.Name, Addr: e.Addr, Addr6: e.Addr6, Protocol: e.Protocol, Online: e.Online, LastSeen: e.LastSeen,
			Queued: e.Queued, Spooled: e.Spooled, SpoolBytes: e.SpoolBytes, Relay: e.Relay, BytesIn: e.BytesIn, BytesOut: e.BytesOut}
		if e.Protocol == string(registry.MQTT) {
			ep.SpoolBytes = e.BytesQueued
		}
		if ps != nil {
			if t := ps.lastSeen[e.Name]; t.After(ep.LastSeen) {
				ep.LastSeen = t
			}
			r := ps.rate[e.Name]
			ep.InRate, ep.OutRate = r[0], r[1]
		}
		if !ep.LastSeen.IsZero() {
			ep.Quiet = now.Sub(ep.LastSeen) > quiet
			ep.Sleeping = !ep.Online && !ep.Quiet
		}
		v.Endpoints = append(v.Endpoints, ep)
	}
	return v
}

// removeFromPage removes an endpoint as `bridge endpoint remove` + SIGHUP
// would: from the registry file, then the running bridge reconciles
// (session closed, relay and spool dropped, address freed).
func (s *Site) removeFromPage(name string) (string, error) {
	reg, err := registry.Open(filepath.Join(s.cfg.StateDir, "endpoints.json"), s.cfg.Prefix)
	if err != nil {
		return "", err
	}
	ep, ok := reg.ByName(name)
	if !ok {
		return "", fmt.Errorf("no endpoint %q", name)
	}
	if err := reg.Remove(name); err != nil {
		return "", err
	}
	if _, err := s.Reload(); err != nil {
		return "", fmt.Errorf("endpoint %s removed from the registry, reload incomplete: %w", name, err)
	}
	return fmt.Sprintf("endpoint %s removed, address %s freed", name, ep.Addr), nil
}
