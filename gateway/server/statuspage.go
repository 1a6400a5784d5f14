package server

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/internal/statuspage"
)

// PeerImplementer is optionally implemented by sessions whose peer
// implementation was recognised (strongSwan, Windows, SoftEther, ...);
// the status page shows it.
type PeerImplementer interface {
	PeerImplementation() string
}

// Rekeyer is optionally implemented by sessions that count their rekeys.
type Rekeyer interface {
	Rekeys() uint64
}

// failureText says a set-up failure reason for a person.
var failureText = map[string]string{
	"auth_failed":               "IKE authentication failed (wrong PSK or certificate)",
	"no_proposal_chosen":        "proposal mismatch (no common IKE/ESP proposal)",
	"bad_credentials":           "PPP authentication failed (wrong password)",
	"unknown_user":              "PPP authentication failed (unknown user)",
	"method_not_allowed":        "PPP authentication method not allowed for this identity",
	"method_unsupported":        "PPP authentication method not supported",
	"identity_mismatch":         "PPP login for another identity than phase 1 proved",
	"backoff":                   "refused: too many failed logins (backing off)",
	"radius_reject":             "RADIUS rejected the user",
	"radius_unreachable":        "no RADIUS server answered",
	"radius_no_mschap2_success": "RADIUS accepted without MS-CHAPv2 success",
	"no_address":                "IPCP: no address left in the pool",
	"rate_limited_per_source":   "admission: too many Main Modes from one source",
	"half_open_limit":           "admission: half-open Main Mode table full",
	"half_open_lost":            "admission: half-open state evicted before MM3",
	"sas_per_source":            "admission: too many IKE SAs from one source",
	"quick_mode_limit":          "Quick Mode limit reached",
	"paced":                     "admission: paced (global rate)",
	"malformed":                 "malformed IKE message",
	"failed":                    "Quick Mode failed",
	"other":                     "Main Mode failed",
}

// statusPage is the fleet status page state: the page and its chart
// sampler (nil when status_page.enabled is false).
type statusPage struct {
	page *statuspage.Page
	smp  *statuspage.Sampler
	// prevRx, prevTx, prevT: the last sample's byte totals (sampler
	// goroutine only).
	prevRx, prevTx uint64
	prevT          time.Time
}

// newStatusPage builds the page for a listener bound at listen, sharing
// smp's charts (nil: a new sampler).
func (s *Server) newStatusPage(cfg *config.Config, listen string, smp *statuspage.Sampler) (*statusPage, error) {
	sp := cfg.StatusPage
	if !sp.On() {
		return nil, nil
	}
	if smp == nil {
		smp = statuspage.NewSampler(sp.SampleIntervalD, 0,
			statuspage.SeriesSpec{Name: "from sites", Unit: "B/s"}, statuspage.SeriesSpec{Name: "to sites", Unit: "B/s"},
			statuspage.SeriesSpec{Name: "sessions", Unit: "sessions"})
	}
	p := &statusPage{smp: smp}
	var acts map[string]statuspage.Action
	if sp.Actions {
		acts = map[string]statuspage.Action{"terminate": s.terminateFromPage}
	}
	name := "gateway"
	if id := GatewayID(cfg); id != nil {
		name = idString(*id)
	}
	page, err := statuspage.New(statuspage.Config{Kind: "gateway", Title: name, Listen: listen, Token: sp.Token, Actions: acts,
		ClientCerts: sp.ClientCA != "" && listen != "localhost", Now: s.now, Logger: s.log, Charts: p.smp.Charts,
		ChartTitles: map[string]string{"B/s": "Throughput", "sessions": "Sessions"},
		Views: map[string]func() any{
			"sessions":    func() any { return s.SessionsView() },
			"failures":    func() any { return s.FailuresView() },
			"credentials": func() any { return s.CredentialsView() },
		}})
	if err != nil {
		return nil, err
	}
	p.page = page
	return p, nil
}

// register adds the page's routes to mux.
func (p *statusPage) register(mux *http.ServeMux) {
	if p != nil {
		p.page.Register(mux)
	}
}

// sampleLoop adds a chart sample every status_page.sample_interval until
// stop is closed.
func (s *Server) sampleLoop(p *statusPage, every time.Duration, stop <-chan struct{}) {
	if p == nil {
		return
	}
	s.sample(p)
	t := s.opts.Clock.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C():
			s.sample(p)
			t.Reset(every)
		}
	}
}

func (s *Server) sample(p *statusPage) {
	now := s.now()
	v := s.SessionsView()
	var rx, tx uint64
	for _, x := range v.Sessions {
		rx += x.RxBytes
		tx += x.TxBytes
	}
	var rxr, txr float64
	if !p.prevT.IsZero() {
		dt := now.Sub(p.prevT)
		rxr, txr = statuspage.Rate(p.prevRx, rx, dt), statuspage.Rate(p.prevTx, tx, dt)
	}
	p.prevRx, p.prevTx, p.prevT = rx, tx, now
	p.smp.Add(now, rxr, txr, float64(len(v.Sessions)))
}

// terminateFromPage closes the session with the ID target.
func (s *Server) terminateFromPage(target string) (string, error) {
	id, err := strconv.ParseUint(target, 10, 64)
	if err != nil {
		return "", fmt.Errorf("no session %q", target)
	}
	var who string
	n := s.CloseSessions(func(sess Session) bool {
		if sess.ID() == id {
			who = sess.Identity()
			return true
		}
		return false
	}, "terminated by the operator (status page)")
	if n == 0 {
		return "", fmt.Errorf("no session %d", id)
	}
	return fmt.Sprintf("session %d (%s) terminated", id, who), nil
}

// SessionsView is the sessions view (status page, CLI --json).
func (s *Server) SessionsView() fleetview.Sessions {
	r := s.Report()
	v := fleetview.Sessions{Now: r.Now, Started: r.Started, Engine: r.Engine, Sessions: make([]fleetview.Session, 0, len(r.Sessions))}
	extra := map[uint64]Session{}
	for _, sess := range s.table.Sessions() {
		extra[sess.ID()] = sess
	}
	for _, x := range r.Sessions {
		e := fleetview.Session{ID: x.ID, Identity: x.Identity, Outer: x.Outer, VPNAddr: x.VPNAddr, Routes: x.Routes, IPv6Prefix: x.IPv6Prefix, Suite: x.Suite,
			Since: x.Since, RxBytes: x.RxBytes, TxBytes: x.TxBytes, RxPackets: x.RxPackets, TxPackets: x.TxPackets, Rekeys: -1}
		if !x.Since.IsZero() {
			e.UptimeSeconds = int64(r.Now.Sub(x.Since).Seconds())
		}
		if sess := extra[x.ID]; sess != nil {
			if pi, ok := sess.(PeerImplementer); ok {
				e.Peer = pi.PeerImplementation()
			}
			if rk, ok := sess.(Rekeyer); ok {
				e.Rekeys = int64(rk.Rekeys())
			}
		}
		v.Sessions = append(v.Sessions, e)
	}
	return v
}

// FailuresView is the recent set-up failures view, newest first.
func (s *Server) FailuresView() fleetview.Failures {
	fs, total := s.gm.RecentFailures()
	v := fleetview.Failures{Capacity: metrics.FailureRing, Total: total, Failures: make([]fleetview.Failure, 0, len(fs))}
	for _, f := range fs {
		t := failureText[f.Reason]
		if t == "" {
			t = f.Reason
		}
		v.Failures = append(v.Failures, fleetview.Failure{Time: f.Time, Phase: f.Phase, Reason: f.Reason, Text: t, Peer: f.Peer, Identity: f.Identity})
	}
	return v
}

// CredentialsView lists certificates and PSKs with an end date, soonest
// first; Soon marks those within status_page.credential_warn.
func (s *Server) CredentialsView() fleetview.Credentials {
	now, warn := s.now(), s.cfg.Load().StatusPage.CredentialWarnD
	v := fleetview.Credentials{Now: now, WarnSeconds: int64(warn.Seconds()), Credentials: []fleetview.Credential{}}
	for _, e := range s.gm.Expiries() {
		left := e.NotAfter.Sub(now)
		v.Credentials = append(v.Credentials, fleetview.Credential{Name: e.Name, Type: e.Type, NotAfter: e.NotAfter,
			ExpiresInSeconds: int64(left.Seconds()), Soon: left <= warn, Expired: left <= 0})
	}
	sort.Slice(v.Credentials, func(i, j int) bool { return v.Credentials[i].NotAfter.Before(v.Credentials[j].NotAfter) })
	return v
}
