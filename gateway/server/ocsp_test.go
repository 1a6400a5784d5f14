package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestFleetOCSP: two gateways (ocsp_fail closed and open) ask the same
// responder (`gateway pki serve-crl`'s /ocsp handler over the CA
// directory). A login is checked once and then served from the cache; a
// certificate revoked at the CA ends its live session on both gateways at
// the next refresh (1 min) and its logins are refused; with the responder
// down, a cached answer holds until its nextUpdate, then the closed
// gateway refuses and the open one accepts, each logged once per 10 s
// and counted; a login with no answer at all asks the responder at most
// once per 10 s (the IKE engine's lock is never held for a dead
// responder's timeout twice in a row); the responder back lifts it.
func TestFleetOCSP(t *testing.T) {
	dir := t.TempDir()
	caClk := stacktest.NewClock()
	store := &pki.Store{Dir: dir, Now: caClk.Now}
	if _, err := store.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	hall7, err := store.Issue(pki.IssueOptions{Name: "hall7"})
	if err != nil {
		t.Fatal(err)
	}
	hall8, err := store.Issue(pki.IssueOptions{Name: "hall8"})
	if err != nil {
		t.Fatal(err)
	}
	hall9, err := store.Issue(pki.IssueOptions{Name: "hall9"})
	if err != nil {
		t.Fatal(err)
	}
	responder := &pki.OCSPResponder{Store: store, Validity: 24 * time.Hour}
	var down atomic.Bool
	var asked atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if down.Load() {
			http.Error(w, "responder down", http.StatusServiceUnavailable)
			return
		}
		responder.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)

	type gw struct {
		srv  *Server
		clk  *stacktest.Clock
		log  *lockedBuffer
		sess certSession
	}
	var gws []*gw
	for i, policy := range []string{"closed", "open"} {
		y := fmt.Sprintf("psk: {shared: x}\nmetrics: {listen: \"off\"}\npki: {dir: %q, ca: ca.crt, ocsp_url: %q, ocsp_refresh: 1m, ocsp_fail: %s}\n", dir, ts.URL+"/ocsp", policy)
		cfg, err := config.Parse("gw.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		clk := stacktest.NewClock()
		logs := &lockedBuffer{}
		srv, err := New(cfg, Options{Host: newNullHost(), Clock: clk, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		g := &gw{srv: srv, clk: clk, log: logs, sess: certSession{newTestSession("hall7", fmt.Sprintf("10.10.0.%d", 7+i)), Phase1{ID: "hall7", Cert: hall7}}}
		for _, c := range []struct {
			name string
			err  error
		}{{"hall7", srv.Env().checkCert(hall7, nil)}, {"hall8", srv.Env().checkCert(hall8, nil)}, {"hall7 again", srv.Env().checkCert(hall7, nil)}} {
			if c.err != nil {
				t.Fatalf("gateway %d: %s refused: %v", i+1, c.name, c.err)
			}
		}
		if err := srv.Env().Register(g.sess); err != nil {
			t.Fatal(err)
		}
		gws = append(gws, g)
	}
	if n := asked.Load(); n != 4 {
		t.Errorf("responder asked %d times for 2 gateways x 2 certificates (3 logins each), want 4: the cache is not used", n)
	}
	advance := func(d time.Duration) {
		caClk.Advance(d)
		for _, g := range gws {
			g.clk.Advance(d)
		}
	}

	// Revoked at the CA: both gateways end the live session at their
	// next refresh. The refresh timer is armed by the server's goroutine,
	// so time moves one interval per poll until it is seen.
	advance(time.Second)
	if err := store.Revoke("hall7"); err != nil {
		t.Fatal(err)
	}
	revokedAt := caClk.Now()
	for i, g := range gws {
		deadline := time.Now().Add(10 * time.Second)
		for !g.sess.wasTerminated() {
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d: revoked session still up", i+1)
			}
			advance(time.Minute)
			time.Sleep(20 * time.Millisecond)
		}
		if g.srv.Env().Sessions.Len() != 0 {
			t.Errorf("gateway %d: revoked session still in the table", i+1)
		}
		if err := g.srv.Env().checkCert(hall7, nil); !errors.Is(err, pki.ErrRevoked) {
			t.Errorf("gateway %d: revoked certificate: %v", i+1, err)
		}
	}
	t.Logf("revoked at the CA: both gateways closed the live session after %s (fake time, refresh 1m)", caClk.Now().Sub(revokedAt))

	// Responder down: hall8's cached answer (valid 24 h) holds.
	down.Store(true)
	advance(2 * time.Minute)
	for i, g := range gws {
		if err := g.srv.Env().checkCert(hall8, nil); err != nil {
			t.Errorf("gateway %d: hall8 refused while its cached answer is valid: %v", i+1, err)
		}
	}
	// Past nextUpdate: the policy decides, logged.
	advance(25 * time.Hour)
	asked.Store(0)
	for i, g := range gws {
		errs := []error{g.srv.Env().checkCert(hall8, nil), g.srv.Env().checkCert(hall9, nil), g.srv.Env().checkCert(hall8, nil)}
		for _, err := range errs {
			switch {
			case i == 0 && !errors.Is(err, errOCSPUnavailable):
				t.Errorf("fail-closed gateway: login with no valid answer: %v", err)
			case i == 1 && err != nil:
				t.Errorf("fail-open gateway: login with no valid answer refused: %v", err)
			}
		}
		if err := g.srv.Env().checkCert(hall7, nil); !errors.Is(err, pki.ErrRevoked) {
			t.Errorf("gateway %d: revoked (sticky) certificate while the responder is down: %v", i+1, err)
		}
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("responder asked %d times by 2 gateways x 3 logins within 10 s, want 2 (one each, then the retry delay)", n)
	}
	o0, o1 := &gws[0].srv.ocsp, &gws[1].srv.ocsp
	if o0.refused.Load() != 3 || o1.accepted.Load() != 3 || o0.failed.Load() == 0 {
		t.Errorf("counted refused %d accepted %d failed %d, want 3 3 >0", o0.refused.Load(), o1.accepted.Load(), o0.failed.Load())
	}
	if n := gws[0].log.count("login refused (pki.ocsp_fail: closed)"); n != 1 {
		t.Errorf("fail-closed logged %d times, want 1", n)
	}
	if n := gws[1].log.count("login accepted (pki.ocsp_fail: open)"); n != 1 {
		t.Errorf("fail-open logged %d times, want 1", n)
	}
	// Responder back: the next login after the retry delay asks it again.
	down.Store(false)
	advance(11 * time.Second)
	if err := gws[0].srv.Env().checkCert(hall9, nil); err != nil {
		t.Errorf("fail-closed gateway with the responder back: %v", err)
	}
	var m strings.Builder
	for _, g := range gws {
		fmt.Fprintf(&m, " [good %d revoked %d failed %d refused %d accepted %d]", g.srv.ocsp.good.Load(), g.srv.ocsp.revoked.Load(), g.srv.ocsp.failed.Load(), g.srv.ocsp.refused.Load(), g.srv.ocsp.accepted.Load())
	}
	t.Logf("ocsp counters closed/open:%s; responder good %d revoked %d", m.String(), responder.Stats.Good.Load(), responder.Stats.Revoked.Load())
}
