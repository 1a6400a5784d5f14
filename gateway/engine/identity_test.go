package engine_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// These tests replay, with the project's own client as the attacker's
// tool, what a holder of the shared PSK could do before the gateway bound
// every session to one identity (issue "one identity per session"), and
// assert the refusal, its log line and its counter.

// logBuf collects the gateway's JSON log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// has reports whether one log line contains every part.
func (l *logBuf) has(parts ...string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok && line != "" {
			return true
		}
	}
	return false
}

// startLogged runs a gateway like startGateway, logging into a buffer.
func startLogged(t testing.TB, cfg *config.Config) (*gateway, *logBuf) {
	t.Helper()
	return startLoggedWith(t, cfg, engine.Config{})
}

func startLoggedWith(t testing.TB, cfg *config.Config, ecfg engine.Config) (*gateway, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	ecfg.IKEConn, ecfg.NATTConn = udpConn(t), udpConn(t)
	eng := engine.New(ecfg)
	srv, err := server.New(cfg, server.Options{Engine: eng, Logger: slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{srv: srv, eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	t.Cleanup(g.stop)
	select {
	case <-eng.Ready():
	case err := <-g.done:
		t.Fatalf("gateway stopped early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready after 10s")
	}
	return g, lb
}

// tryDial dials and reports the error (nil: up, closed at cleanup).
func tryDial(t testing.TB, cc l2tpipsec.ClientConfig, d time.Duration) (*l2tpipsec.Tunnel, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tn, err := l2tpipsec.Dial(ctx, cc)
	if err == nil {
		t.Cleanup(func() { _ = tn.Close() })
	}
	return tn, err
}

func fqdn(s string) *ike.Identification {
	return &ike.Identification{Type: ike.IDFQDN, Data: []byte(s)}
}

// metricAtLeast waits until the exposition has series >= want.
func metricAtLeast(t testing.TB, g *gateway, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := metricValue(g.scrape(t), series)
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want >= %v", series, v, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

const sharedYAML = `
psk: {shared: %s}
pool: {prefix: 10.10.0.0/24}
metrics: {listen: "off"}
pacing: {per_source_rate: 1000, per_source_burst: 1000}
dataplane: {mode: userspace}
policy: {default: allow}
identities:
%s`

func sharedConfig(t testing.TB, dir, idents string) *config.Config {
	t.Helper()
	c, err := config.Parse(filepath.Join(dir, "gw.yaml"), fmt.Appendf(nil, sharedYAML, testPSK, idents))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertSitePPPNameOverSharedPSK: finding 1. A shared-PSK holder that
// logs in over PPP as a certificate site (with that site's password) is
// refused, logged with both identities and counted; the stock client the
// shared PSK is for still logs in.
func TestCertSitePPPNameOverSharedPSK(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: site-hall7, auth: cert, id: site-hall7.sites.example.net, ppp: {password: pw7, methods: [mschapv2]}, address: 10.10.0.7, routes: [10.10.8.0/24]}
  - {name: ops-laptop, auth: psk, ppp: {user: ops, password: opspw}}
`)
	g, lb := startLogged(t, cfg)
	cc := g.clientConfig("site-hall7", "pw7")
	cc.LocalID = fqdn("attacker.example.net")
	_, err := tryDial(t, cc, 20*time.Second)
	if l2tpipsec.PhaseOf(err) != l2tpipsec.PhasePPPAuth {
		t.Fatalf("attacker as site-hall7: got %v (phase %v), want a PPP authentication failure", err, l2tpipsec.PhaseOf(err))
	}
	if g.srv.Env().Sessions.ByIdentity("site-hall7") != nil {
		t.Fatal("site-hall7 has a session")
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="ppp_identity_mismatch"}`, 1)
	if !lb.has("PPP login refused: not the identity phase 1 authenticated", `"phase1_identity":"psk:attacker.example.net"`, `"ppp_identity":"site-hall7"`) {
		t.Errorf("no refusal line naming both identities in:\n%s", lb.String())
	}
	ops := g.clientConfig("ops", "opspw")
	ops.LocalID = nil
	ops.LocalIKE, ops.LocalNATT = "127.0.0.2:0", "127.0.0.2:0"
	if _, err := tryDial(t, ops, 20*time.Second); err != nil {
		t.Fatalf("stock client with the shared PSK: %v", err)
	}
}

// TestPSKIdentityOwnKey: finding 2. An identity with its own key comes up
// with it and is refused with the shared key (log line, counter).
func TestPSKIdentityOwnKey(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: site-d, auth: psk, id: site-d.example, psk: own-key-of-site-d, ppp: {password: pwd}}
`)
	g, lb := startLogged(t, cfg)
	cc := g.clientConfig("site-d", "pwd")
	cc.LocalID = fqdn("site-d.example")
	cc.PSK = []byte(testPSK)
	if _, err := tryDial(t, cc, 10*time.Second); err == nil || l2tpipsec.PhaseOf(err) != l2tpipsec.PhaseIKE {
		t.Fatalf("site-d with the shared key: got %v (phase %v), want an IKE failure", err, l2tpipsec.PhaseOf(err))
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="psk_not_bound"}`, 1)
	if !lb.has("phase 1 failed", "site-d.example", "not the one bound to it") {
		t.Errorf("no phase 1 refusal line in:\n%s", lb.String())
	}
	cc.PSK = []byte("own-key-of-site-d")
	cc.LocalIKE, cc.LocalNATT = "127.0.0.3:0", "127.0.0.3:0"
	if _, err := tryDial(t, cc, 20*time.Second); err != nil {
		t.Fatalf("site-d with its own key: %v", err)
	}
	waitFor(t, "site-d registered", func() bool { return g.srv.Env().Sessions.ByIdentity("site-d") != nil })
}

// TestInitialContactBorrowedID: finding 3. A Main Mode from another
// address with the shared PSK, a victim's FQDN as its ID and
// INITIAL-CONTACT (our client sends it on its first Main Mode) no longer
// deletes the victim's SAs.
func TestInitialContactBorrowedID(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: site-e, auth: psk, id: site-e.example, ppp: {password: pwe}}
`)
	g, lb := startLogged(t, cfg)
	victim := g.clientConfig("site-e", "pwe")
	victim.LocalID = fqdn("site-e.example")
	vt, err := tryDial(t, victim, 20*time.Second)
	if err != nil {
		t.Fatalf("victim: %v", err)
	}
	attacker := g.clientConfig("site-e", "guess")
	attacker.LocalID = fqdn("site-e.example")
	attacker.LocalIKE, attacker.LocalNATT = "127.0.0.4:0", "127.0.0.4:0"
	if _, err := tryDial(t, attacker, 20*time.Second); err == nil {
		t.Fatal("attacker logged in")
	}
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="initial_contact_ignored"}`, 1)
	if !lb.has("INITIAL-CONTACT ignored", "site-e.example") {
		t.Errorf("no INITIAL-CONTACT line in:\n%s", lb.String())
	}
	select {
	case <-vt.Done():
		t.Fatalf("victim's tunnel went down: %v", vt.Err())
	case <-time.After(500 * time.Millisecond):
	}
	if g.srv.Env().Sessions.ByIdentity("site-e") == nil {
		t.Fatal("victim's session is gone")
	}
}

// TestWrongPPPPasswordsEndSA: finding 4. Ten wrong PPP passwords: each
// failure ends the tunnel and the IKE SA, so every guess costs a new Main
// Mode (ten phase 1s for ten guesses, no peer left).
func TestWrongPPPPasswordsEndSA(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: ops-laptop, auth: psk, ppp: {user: ops, password: right}}
auth_backoff: {free_failures: 100}
`)
	g, lb := startLogged(t, cfg)
	ts := g.eng.Tunnel()
	for i := range 10 {
		cc := g.clientConfig("ops", fmt.Sprintf("wrong-%d", i))
		_, err := tryDial(t, cc, 20*time.Second)
		// The PPP failure, or the Delete that follows it (client-side race).
		if ph := l2tpipsec.PhaseOf(err); ph != l2tpipsec.PhasePPPAuth && ph != l2tpipsec.PhaseIPsec {
			t.Fatalf("guess %d: got %v, want a PPP authentication failure", i, err)
		}
		waitFor(t, "the attacker's IKE SA gone", func() bool { return ts.PeerCount() == 0 })
	}
	if got := ts.Stats().IKE.Phase1Established.Load(); got != 10 {
		t.Errorf("phase 1 established %d times for 10 guesses, want 10 (one SA per guess)", got)
	}
	waitFor(t, "10 auth hangups", func() bool { return ts.GuardStats().AuthHangups.Load() == 10 })
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="ppp_auth_failed_hangup"}`, 10)
	if !lb.has("PPP authentication failed: closing the tunnel and the IKE SA") {
		t.Errorf("no hangup line in:\n%s", lb.String())
	}
}

// TestPPPMethodsAsConfigured: finding 5. A PAP-only identity is offered
// PAP and logs in with it; an MS-CHAPv2-only identity is offered
// MS-CHAPv2 only: a client that accepts only CHAP-MD5 cannot log in.
func TestPPPMethodsAsConfigured(t *testing.T) {
	cfg := sharedConfig(t, t.TempDir(), `  - {name: pap-site, auth: psk, id: pap.example, psk: pap-key, ppp: {password: pp, methods: [pap]}}
  - {name: ms-site, auth: psk, id: ms.example, psk: ms-key, ppp: {password: mp, methods: [mschapv2]}}
`)
	g, _ := startLogged(t, cfg)
	pap := g.clientConfig("pap-site", "pp")
	pap.LocalID, pap.PSK = fqdn("pap.example"), []byte("pap-key")
	pap.AuthMethods = []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthPAP}
	tn, err := tryDial(t, pap, 20*time.Second)
	if err != nil {
		t.Fatalf("PAP-only identity: %v", err)
	}
	if m := tn.Status().Auth; m != ppp.AuthPAP.String() {
		t.Errorf("PAP-only identity authenticated with %q", m)
	}
	ms := g.clientConfig("ms-site", "mp")
	ms.LocalID, ms.PSK = fqdn("ms.example"), []byte("ms-key")
	ms.LocalIKE, ms.LocalNATT = "127.0.0.5:0", "127.0.0.5:0"
	ms.AuthMethods = []ppp.AuthMethod{ppp.AuthCHAPMD5}
	if _, err := tryDial(t, ms, 8*time.Second); err == nil {
		t.Fatal("MS-CHAPv2-only identity logged in with CHAP-MD5")
	}
	ms.AuthMethods = nil
	ms.LocalIKE, ms.LocalNATT = "127.0.0.6:0", "127.0.0.6:0"
	tn2, err := tryDial(t, ms, 20*time.Second)
	if err != nil {
		t.Fatalf("MS-CHAPv2-only identity: %v", err)
	}
	if m := tn2.Status().Auth; m != ppp.AuthMSCHAPv2.String() {
		t.Errorf("MS-CHAPv2-only identity authenticated with %q", m)
	}
}

// TestRevokedSiteClosedOnReload: finding 6. A live certificate site is
// closed, its routes withdrawn and its IKE SA deleted within 2 s of the
// reload that brings the CRL revoking it.
func TestRevokedSiteClosedOnReload(t *testing.T) {
	dir := t.TempDir()
	st := &pki.Store{Dir: dir}
	if _, err := st.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Issue(pki.IssueOptions{Name: "gw", Kind: "gateway"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Issue(pki.IssueOptions{Name: "site-c", SANs: []string{"site-c.example"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteCRL(); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`pool: {prefix: 10.10.0.0/24}
metrics: {listen: "off"}
dataplane: {mode: userspace}
policy: {default: allow}
pki: {dir: %q, ca: ca.crt, crl: crl.pem, cert: certs/gw.crt, key: certs/gw.key}
identities:
  - {name: site-c, auth: cert, id: site-c.example, ppp: {password: pwc}, routes: [10.10.12.0/24]}
`, dir)
	cfg, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	g, lb := startLogged(t, cfg)
	ca, err := pemfile.ReadCert(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	crt, err := pemfile.ReadCert(filepath.Join(dir, "certs", "site-c.crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pemfile.ReadKey(filepath.Join(dir, "certs", "site-c.key"))
	if err != nil {
		t.Fatal(err)
	}
	cc := g.clientConfig("site-c", "pwc")
	cc.PSK = nil
	cc.Cert = &ike.LocalCert{Chain: [][]byte{crt.Raw}, Key: key}
	cc.CAs = pkiPool(ca)
	cc.LocalID = fqdn("site-c.example")
	tn, err := tryDial(t, cc, 20*time.Second)
	if err != nil {
		t.Fatalf("site-c: %v", err)
	}
	waitFor(t, "site-c registered", func() bool { return g.srv.Env().Sessions.ByIdentity("site-c") != nil })
	if err := st.Revoke("site-c"); err != nil {
		t.Fatal(err)
	}
	next, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := g.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	if g.srv.Env().Sessions.ByIdentity("site-c") != nil {
		t.Fatal("revoked site still in the session table after the reload")
	}
	select {
	case <-tn.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("revoked site's tunnel still up 2 s after the reload")
	}
	t.Logf("revoked site's tunnel ended %v after the reload (%v)", time.Since(t0).Round(time.Millisecond), tn.Err())
	waitFor(t, "the revoked site's IKE SA gone", func() bool { return g.eng.Tunnel().PeerCount() == 0 })
	metricAtLeast(t, g, `fleetgate_security_refusals_total{check="revoked_session_closed"}`, 1)
	if !lb.has("configuration reloaded", `"revoked_closed":1`) || !lb.has("closing the session of a revoked certificate", "site-c") {
		t.Errorf("no revocation lines in:\n%s", lb.String())
	}
	if _, err := tryDial(t, cc, 5*time.Second); err == nil {
		t.Fatal("revoked site logged in again")
	}
}

func pkiPool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}
