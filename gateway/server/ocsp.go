package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ocsp"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// OCSP against the operator's responder (pki.ocsp_url), on top of the CA
// chain and CRL checks:
//
//   - at login (checkCert, called on one of the IKE engine's key-exchange
//     workers, off its lock, but holding a worker: it never waits long): a cached answer younger than pki.ocsp_refresh
//     decides; else the responder is asked (ocspQueryTimeout) unless it
//     failed within ocspRetry; if it cannot answer, a cached answer still
//     inside its nextUpdate decides; else pki.ocsp_fail: "closed" refuses
//     the login, "open" accepts it, both logged (at most one line per
//     ocspLogEvery) and counted.
//   - every pki.ocsp_refresh, the certificate of every live session is
//     asked about again; a revoked one ends its sessions (CloseSessions),
//     so a revocation reaches every gateway of the fleet within the
//     interval. A live session whose status cannot be refreshed stays up
//     (logged): the policy governs new logins.
//
// A revoked answer is sticky (a certificate is never un-revoked). The
// cache holds at most pki.ocsp_cache_max certificates (the oldest answer
// evicted, counted).

const (
	ocspQueryTimeout = 2 * time.Second
	ocspRetry        = 10 * time.Second
	ocspLogEvery     = 10 * time.Second
)

// ocspEntry is the last answer about one certificate.
type ocspEntry struct {
	status     int       // ocsp.Good, Revoked, Unknown
	checked    time.Time // when the responder answered
	nextUpdate time.Time // of that answer (zero: none given)
}

// ocspState is the checker's state.
type ocspState struct {
	client *http.Client

	mu        sync.Mutex
	cache     map[string]*ocspEntry // serial (hex) -> answer
	downUntil time.Time             // no query at login before this
	logged    map[string]time.Time  // rate limit per log kind

	good, revoked, unknown, failed, invalid atomic.Uint64 // answers
	refused, accepted, evicted              atomic.Uint64 // fail policy decisions, cache
}

func (o *ocspState) init() {
	o.mu.Lock()
	if o.cache == nil {
		o.cache, o.logged = map[string]*ocspEntry{}, map[string]time.Time{}
		o.client = &http.Client{Timeout: ocspQueryTimeout}
	}
	o.mu.Unlock()
}

// errOCSPUnavailable refuses a login under pki.ocsp_fail: closed.
var errOCSPUnavailable = errors.New("server: certificate status unknown: OCSP responder unreachable and no valid cached answer (pki.ocsp_fail: closed)")

// checkOCSP decides whether leaf may log in (see above).
func (s *Server) checkOCSP(leaf *x509.Certificate) error {
	cfg := s.cfg.Load()
	if cfg.PKI.OCSPURL == "" {
		return nil
	}
	o := &s.ocsp
	now := s.now()
	key := leaf.SerialNumber.Text(16)
	o.mu.Lock()
	e := o.cache[key]
	var cached ocspEntry
	if e != nil {
		cached = *e
	}
	try := now.Compare(o.downUntil) >= 0
	o.mu.Unlock()
	if e != nil && (cached.status == ocsp.Revoked || now.Sub(cached.checked) < cfg.PKI.OCSPRefreshD) {
		return ocspVerdict(cached.status)
	}
	if try {
		if st, err := s.queryOCSP(cfg, leaf); err == nil {
			return ocspVerdict(st)
		}
	}
	if e != nil && !cached.nextUpdate.IsZero() && now.Before(cached.nextUpdate) {
		return ocspVerdict(cached.status)
	}
	if cfg.PKI.OCSPFail == "open" {
		o.accepted.Add(1)
		s.ocspLog("open", func() {
			s.log.Warn("certificate status unknown (OCSP responder unreachable, no valid cached answer): login accepted (pki.ocsp_fail: open)",
				"url", cfg.PKI.OCSPURL, "serial", key)
		})
		return nil
	}
	o.refused.Add(1)
	s.ocspLog("closed", func() {
		s.log.Error("certificate status unknown (OCSP responder unreachable, no valid cached answer): login refused (pki.ocsp_fail: closed)",
			"url", cfg.PKI.OCSPURL, "serial", key)
	})
	return errOCSPUnavailable
}

func ocspVerdict(status int) error {
	switch status {
	case ocsp.Good:
		return nil
	case ocsp.Revoked:
		return pki.ErrRevoked
	}
	return errors.New("server: the OCSP responder does not know this certificate")
}

// ocspLog runs f at most once per ocspLogEvery for kind.
func (s *Server) ocspLog(kind string, f func()) {
	now := s.now()
	s.ocsp.mu.Lock()
	last, ok := s.ocsp.logged[kind]
	due := !ok || now.Sub(last) >= ocspLogEvery
	if due {
		s.ocsp.logged[kind] = now
	}
	s.ocsp.mu.Unlock()
	if due {
		f()
	}
}

// queryOCSP asks the responder about leaf and caches a valid answer. A
// failure keeps login-time queries off for ocspRetry.
func (s *Server) queryOCSP(cfg *config.Config, leaf *x509.Certificate) (int, error) {
	o := &s.ocsp
	ca, err := pemfile.ReadCert(cfg.PKI.CA)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), ocspQueryTimeout)
		var r *ocsp.Response
		r, err = pki.QueryOCSP(ctx, o.client, cfg.PKI.OCSPURL, leaf, ca, s.now())
		cancel()
		if err == nil {
			s.storeOCSP(cfg, leaf, r)
			return r.Status, nil
		}
	}
	now := s.now()
	if errors.Is(err, pki.ErrOCSPInvalid) {
		o.invalid.Add(1)
	} else {
		o.failed.Add(1)
	}
	o.mu.Lock()
	o.downUntil = now.Add(ocspRetry)
	o.mu.Unlock()
	s.ocspLog("query", func() { s.log.Warn("ocsp query failed", "url", cfg.PKI.OCSPURL, "err", err) })
	return 0, err
}

func (s *Server) storeOCSP(cfg *config.Config, leaf *x509.Certificate, r *ocsp.Response) {
	o := &s.ocsp
	switch r.Status {
	case ocsp.Good:
		o.good.Add(1)
	case ocsp.Revoked:
		o.revoked.Add(1)
	default:
		o.unknown.Add(1)
	}
	key := leaf.SerialNumber.Text(16)
	now := s.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.downUntil = time.Time{}
	if old := o.cache[key]; old != nil && old.status == ocsp.Revoked {
		return // sticky
	}
	if _, ok := o.cache[key]; !ok && len(o.cache) >= cfg.PKI.OCSPCacheMax {
		var oldest string
		var at time.Time
		for k, e := range o.cache {
			if oldest == "" || e.checked.Before(at) {
				oldest, at = k, e.checked
			}
		}
		delete(o.cache, oldest)
		o.evicted.Add(1)
	}
	o.cache[key] = &ocspEntry{status: r.Status, checked: now, nextUpdate: r.NextUpdate}
}

// runOCSP re-checks the live sessions' certificates every refresh.
func (s *Server) runOCSP(ctx context.Context, cfg *config.Config) {
	for {
		t := s.opts.Clock.NewTimer(cfg.PKI.OCSPRefreshD)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		s.refreshOCSP(cfg)
	}
}

// refreshOCSP asks about every live session's certificate once and ends
// the sessions of revoked ones. It returns how many sessions it closed.
func (s *Server) refreshOCSP(cfg *config.Config) int {
	certs := map[string]*x509.Certificate{}
	for _, sess := range s.table.Sessions() {
		if p, ok := sess.(Phase1er); ok && p.Phase1().Cert != nil {
			c := p.Phase1().Cert
			certs[c.SerialNumber.Text(16)] = c
		}
	}
	revoked := map[string]bool{}
	failed := 0
	for k, c := range certs {
		st, err := s.queryOCSP(cfg, c)
		if err != nil {
			failed++
			continue
		}
		if st == ocsp.Revoked {
			revoked[k] = true
		}
	}
	if failed > 0 {
		s.log.Warn("ocsp refresh: live sessions kept with their last answer", "url", cfg.PKI.OCSPURL, "certificates", len(certs), "failed", failed)
	}
	if len(revoked) == 0 {
		return 0
	}
	return s.CloseSessions(func(sess Session) bool {
		p, ok := sess.(Phase1er)
		if !ok || p.Phase1().Cert == nil || !revoked[p.Phase1().Cert.SerialNumber.Text(16)] {
			return false
		}
		s.gm.Refused(metrics.CheckRevokedSession)
		s.log.Warn("closing the session of a certificate the OCSP responder reports revoked", "session_id", sess.ID(), "identity", sess.Identity(),
			"serial", p.Phase1().Cert.SerialNumber.String())
		return true
	}, "certificate revoked")
}

var (
	descOCSPAnswers = desc("fleetgate_ocsp_answers_total", "OCSP queries by result (good, revoked, unknown, failed: no answer, invalid: answer rejected).", "result")
	descOCSPPolicy  = desc("fleetgate_ocsp_fail_policy_total", "Logins decided by pki.ocsp_fail for want of a valid answer.", "decision")
	descOCSPCache   = desc("fleetgate_ocsp_cache_entries", "Certificates in the OCSP answer cache.")
	descOCSPEvicted = desc("fleetgate_ocsp_cache_evictions_total", "OCSP answers evicted because pki.ocsp_cache_max was reached.")
)

// ocspCollector exports the checker's state.
type ocspCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (ocspCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOCSPAnswers, descOCSPPolicy, descOCSPCache, descOCSPEvicted} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c ocspCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.cfg.Load().PKI.OCSPURL == "" {
		return
	}
	o := &s.ocsp
	for _, x := range []struct {
		l string
		v uint64
	}{{"good", o.good.Load()}, {"revoked", o.revoked.Load()}, {"unknown", o.unknown.Load()}, {"failed", o.failed.Load()}, {"invalid", o.invalid.Load()}} {
		metrics.Emit(ch, descOCSPAnswers, prometheus.CounterValue, float64(x.v), x.l)
	}
	metrics.Emit(ch, descOCSPPolicy, prometheus.CounterValue, float64(o.refused.Load()), "refused")
	metrics.Emit(ch, descOCSPPolicy, prometheus.CounterValue, float64(o.accepted.Load()), "accepted")
	o.mu.Lock()
	n := len(o.cache)
	o.mu.Unlock()
	metrics.Emit(ch, descOCSPCache, prometheus.GaugeValue, float64(n))
	metrics.Emit(ch, descOCSPEvicted, prometheus.CounterValue, float64(o.evicted.Load()))
}
