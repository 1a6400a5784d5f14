package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/status"
	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// One revocation source for the fleet: every gateway fetches the same CRL
// distribution point (pki.crl_url) every pki.crl_refresh. A CRL signed by
// the CA and not older than the one in use replaces it (Env.Verifier) and
// the live sessions of certificates it revokes end at once
// (CloseSessions). When no valid CRL is at hand (the source unreachable and
// the last CRL past its nextUpdate) pki.crl_fail decides: "closed" refuses
// certificate logins (the verifier is withdrawn) until a fresh CRL
// arrives, "open" keeps the stale CRL; both are logged.

// maxCRLBytes bounds a fetched CRL.
const maxCRLBytes = 4 << 20

// crlSource is the fetcher's state.
type crlSource struct {
	mu         sync.Mutex
	last       *x509.RevocationList // newest CRL fetched
	nextUpdate time.Time            // of the CRL in force (file or fetched)
	closed     bool                 // fail-closed in force

	ok, failed, older, stale atomic.Uint64
}

// runCRLSource fetches until ctx is done.
func (s *Server) runCRLSource(ctx context.Context, cfg *config.Config) {
	if v := s.verifier.Load(); v != nil {
		s.crl.mu.Lock()
		s.crl.nextUpdate = v.CRLNextUpdate
		s.crl.mu.Unlock()
	}
	for {
		s.fetchCRLOnce(ctx, cfg)
		t := s.opts.Clock.NewTimer(cfg.PKI.CRLRefreshD)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

func (s *Server) fetchCRLOnce(ctx context.Context, cfg *config.Config) {
	crl, err := fetchCRL(ctx, cfg.PKI.CRLURL)
	var v *pki.Verifier
	if err == nil {
		var ca *x509.Certificate
		if ca, err = pemfile.ReadCert(cfg.PKI.CA); err == nil {
			v, err = pki.NewVerifier(ca, crl) // checks the CA's signature
		}
	}
	if err != nil {
		s.crl.failed.Add(1)
		s.log.Warn("crl fetch failed", "url", cfg.PKI.CRLURL, "err", err)
		s.crlPolicy(cfg)
		return
	}
	s.crl.mu.Lock()
	if s.crl.last != nil && crl.ThisUpdate.Before(s.crl.last.ThisUpdate) {
		s.crl.mu.Unlock()
		s.crl.older.Add(1)
		s.log.Warn("crl fetched is older than the one in use: ignored", "url", cfg.PKI.CRLURL, "this_update", crl.ThisUpdate)
		s.crlPolicy(cfg)
		return
	}
	s.crl.last, s.crl.nextUpdate = crl, crl.NextUpdate
	wasClosed := s.crl.closed
	s.crl.closed = false
	s.crl.mu.Unlock()
	s.crl.ok.Add(1)
	s.verifier.Store(v)
	if wasClosed {
		s.log.Info("crl fetched: certificate logins accepted again", "url", cfg.PKI.CRLURL)
	}
	n := s.closeRevoked(v)
	s.log.Debug("crl fetched", "url", cfg.PKI.CRLURL, "revoked", len(crl.RevokedCertificateEntries), "next_update", crl.NextUpdate, "sessions_closed", n)
}

// closeRevoked ends the sessions whose certificate v revokes.
func (s *Server) closeRevoked(v *pki.Verifier) int {
	return s.CloseSessions(func(sess Session) bool {
		p, ok := sess.(Phase1er)
		if !ok || p.Phase1().Cert == nil || v.CheckRevoked(p.Phase1().Cert) == nil {
			return false
		}
		s.gm.Refused(metrics.CheckRevokedSession)
		s.log.Warn("closing the session of a certificate revoked by the fleet CRL", "session_id", sess.ID(), "identity", sess.Identity(),
			"serial", p.Phase1().Cert.SerialNumber.String())
		return true
	}, "certificate revoked")
}

// crlPolicy applies pki.crl_fail when the CRL in force is past its
// nextUpdate and no newer one could be fetched.
func (s *Server) crlPolicy(cfg *config.Config) {
	now := s.now()
	s.crl.mu.Lock()
	fresh := !s.crl.nextUpdate.IsZero() && now.Before(s.crl.nextUpdate)
	if fresh {
		s.crl.mu.Unlock()
		return
	}
	s.crl.stale.Add(1)
	if cfg.PKI.CRLFail == "open" {
		s.crl.mu.Unlock()
		s.log.Warn("no valid CRL (source unreachable, last CRL past nextUpdate): certificate logins still accepted (pki.crl_fail: open)",
			"url", cfg.PKI.CRLURL, "next_update", s.crl.nextUpdate)
		return
	}
	first := !s.crl.closed
	s.crl.closed = true
	s.crl.mu.Unlock()
	s.verifier.Store(nil)
	if first {
		s.log.Error("no valid CRL (source unreachable, last CRL past nextUpdate): certificate logins refused until a fresh CRL arrives (pki.crl_fail: closed)",
			"url", cfg.PKI.CRLURL, "next_update", s.crl.nextUpdate)
	}
}

// crlVerifier adjusts a verifier built from files on reload: refused
// while fail-closed is in force; the fetched CRL when it is newer than
// the file's.
func (s *Server) crlVerifier(cfg *config.Config, v *pki.Verifier) (*pki.Verifier, error) {
	if cfg.PKI.CRLURL == "" || v == nil {
		return v, nil
	}
	s.crl.mu.Lock()
	last, closed := s.crl.last, s.crl.closed
	s.crl.mu.Unlock()
	if closed {
		return nil, nil
	}
	if last == nil {
		return v, nil
	}
	if cfg.PKI.CRL != "" {
		if f, err := pemfile.ReadCRL(cfg.PKI.CRL); err == nil && !f.ThisUpdate.Before(last.ThisUpdate) {
			return v, nil
		}
	}
	ca, err := pemfile.ReadCert(cfg.PKI.CA)
	if err != nil {
		return nil, err
	}
	return pki.NewVerifier(ca, last)
}

func fetchCRL(ctx context.Context, url string) (*x509.RevocationList, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("server: crl: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCRLBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCRLBytes {
		return nil, errors.New("server: crl: larger than 4 MiB")
	}
	return pemfile.ParseCRL(b)
}

// crlReport is the status report's CRL part.
func (s *Server) crlReport() *status.CRL {
	cfg := s.cfg.Load()
	if cfg.PKI.CRLURL == "" {
		return nil
	}
	s.crl.mu.Lock()
	defer s.crl.mu.Unlock()
	return &status.CRL{URL: cfg.PKI.CRLURL, NextUpdate: s.crl.nextUpdate, Fetched: s.crl.ok.Load(), Failed: s.crl.failed.Load(), FailClosed: s.crl.closed}
}

var (
	descCRLFetches    = desc("fleetgate_crl_fetches_total", "Fleet CRL fetches by result (ok, failed, older: ignored, stale: no valid CRL at hand).", "result")
	descCRLNextUpdate = desc("fleetgate_crl_next_update_timestamp_seconds", "nextUpdate of the CRL in force.")
	descCRLClosed     = desc("fleetgate_crl_fail_closed", "1 while certificate logins are refused for want of a valid CRL.")
)

// crlCollector exports the fetcher's state.
type crlCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (crlCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCRLFetches, descCRLNextUpdate, descCRLClosed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c crlCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.cfg.Load().PKI.CRLURL == "" {
		return
	}
	st := &s.crl
	for _, x := range []struct {
		l string
		v uint64
	}{{"ok", st.ok.Load()}, {"failed", st.failed.Load()}, {"older", st.older.Load()}, {"stale", st.stale.Load()}} {
		metrics.Emit(ch, descCRLFetches, prometheus.CounterValue, float64(x.v), x.l)
	}
	st.mu.Lock()
	nu, closed := st.nextUpdate, st.closed
	st.mu.Unlock()
	if !nu.IsZero() {
		metrics.Emit(ch, descCRLNextUpdate, prometheus.GaugeValue, float64(nu.Unix()))
	}
	v := 0.0
	if closed {
		v = 1
	}
	metrics.Emit(ch, descCRLClosed, prometheus.GaugeValue, v)
}
