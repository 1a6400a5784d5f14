package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

type certSession struct {
	*testSession
	p Phase1
}

func (c certSession) Phase1() Phase1 { return c.p }

// TestFleetCRL: two gateways fetch the same CRL distribution point (served
// from `gateway pki`'s crl.pem). A site certificate revoked at the CA ends
// its live session on both within one refresh interval. With the source
// down and the CRL past its nextUpdate, the fail-closed gateway withdraws
// its verifier (certificate logins refused) and the fail-open one keeps
// it; a fresh CRL lifts fail-closed.
func TestFleetCRL(t *testing.T) {
	dir := t.TempDir()
	caClk := stacktest.NewClock() // the CA's clock runs with the gateways' fake clocks
	store := &pki.Store{Dir: dir, Now: caClk.Now}
	if _, err := store.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	cert, err := store.Issue(pki.IssueOptions{Name: "hall7"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.WriteCRL(); err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	var served atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "responder down", http.StatusServiceUnavailable)
			return
		}
		b, err := os.ReadFile(filepath.Join(dir, "crl.pem"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		served.Add(1)
		_, _ = w.Write(b)
	}))
	t.Cleanup(ts.Close)

	type gw struct {
		srv  *Server
		clk  *stacktest.Clock
		sess certSession
	}
	var gws []*gw
	for i, policy := range []string{"closed", "open"} {
		y := fmt.Sprintf("psk: {shared: x}\nmetrics: {listen: \"off\"}\npki: {dir: %q, ca: ca.crt, crl_url: %q, crl_refresh: 1m, crl_fail: %s}\n", dir, ts.URL+"/crl.pem", policy)
		cfg, err := config.Parse("gw.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		clk := stacktest.NewClock()
		srv, err := New(cfg, Options{Host: newNullHost(), Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		g := &gw{srv: srv, clk: clk, sess: certSession{newTestSession("hall7", fmt.Sprintf("10.10.0.%d", 7+i)), Phase1{ID: "hall7", Cert: cert}}}
		waitFor(t, func() bool { return srv.crl.ok.Load() == 1 })
		if err := srv.Env().Register(g.sess); err != nil {
			t.Fatal(err)
		}
		gws = append(gws, g)
	}

	// Revoked at the CA: both gateways end the session at their next
	// fetch (the fake clocks advance one refresh interval).
	caClk.Advance(time.Minute)
	if err := store.Revoke("hall7"); err != nil {
		t.Fatal(err)
	}
	for _, g := range gws {
		g.clk.Advance(time.Minute)
	}
	for i, g := range gws {
		waitFor(t, func() bool { return g.sess.wasTerminated() })
		if g.srv.Env().Sessions.Len() != 0 {
			t.Errorf("gateway %d: revoked session still in the table", i+1)
		}
		if _, err := g.srv.Env().IdentityForCert(cert, nil, ""); err == nil {
			t.Errorf("gateway %d: revoked certificate still accepted", i+1)
		}
	}
	t.Logf("revoked at the CA: both gateways closed the live session at their next fetch (CRL served %d times)", served.Load())

	// Source down, CRL past nextUpdate (30 days): policy decides.
	down.Store(true)
	caClk.Advance(31 * 24 * time.Hour)
	for _, g := range gws {
		g.clk.Advance(31 * 24 * time.Hour)
	}
	waitFor(t, func() bool { return gws[0].srv.crl.stale.Load() > 0 && gws[1].srv.crl.stale.Load() > 0 })
	if gws[0].srv.Env().Verifier() != nil {
		t.Error("fail-closed gateway still has a verifier with no valid CRL")
	}
	if r := gws[0].srv.Report().CRL; r == nil || !r.FailClosed || r.Failed == 0 {
		t.Errorf("status crl: %+v", r)
	}
	if gws[1].srv.Env().Verifier() == nil {
		t.Error("fail-open gateway dropped its verifier")
	}
	// A fresh CRL lifts it.
	if _, err := store.WriteCRL(); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	gws[0].clk.Advance(time.Minute)
	waitFor(t, func() bool { return gws[0].srv.Env().Verifier() != nil })
	if n := gws[0].srv.crl.failed.Load(); n == 0 {
		t.Error("no failed fetch counted while the source was down")
	}
}
