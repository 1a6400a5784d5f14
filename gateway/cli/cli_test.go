package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb, nil, nil)
	return code, out.String(), errb.String()
}

func TestCheckConfig(t *testing.T) {
	// The shipped configuration without its PKI: every missing file is
	// listed, with its key, line and the command that creates it.
	shipped := testenv.ExampleConfig(t, "gateway.yaml")
	pkiDir := filepath.Join(filepath.Dir(shipped), "pki")
	code, out, errs := run(t, "--check-config", shipped)
	if strings.Contains(out, "OK") {
		t.Errorf("shipped config without PKI: stdout %q says OK", out)
	}
	for _, want := range []string{
		"pki.ca: " + filepath.Join(pkiDir, "ca.crt") + ": missing (create it with: gateway pki init --dir " + pkiDir,
		"pki.cert: " + filepath.Join(pkiDir, "certs", "gw1.crt") + ": missing (create it with: gateway pki issue gw1 --kind gateway --dir " + pkiDir,
		"pki.key: " + filepath.Join(pkiDir, "certs", "gw1.key") + ": missing",
		"pki.crl: " + filepath.Join(pkiDir, "crl.pem") + ": missing (create it with: gateway pki crl --dir " + pkiDir,
		"for a PSK-only gateway without a PKI remove pki.cert and pki.key",
	} {
		if code != 1 || !strings.Contains(errs, shipped+":") || !strings.Contains(errs, want) {
			t.Errorf("shipped config without PKI: code %d, stderr %q; want 1 and %q", code, errs, want)
		}
	}
	// The commands the errors name create exactly the files the shipped
	// configuration names (`pki issue gw1 --kind gateway` used to write
	// certs/gw1.crt while the config named pki/gateway.crt).
	for _, args := range [][]string{{"pki", "init", "--dir", pkiDir}, {"pki", "issue", "gw1", "--kind", "gateway", "--dir", pkiDir, "--san", "vpn.example.net"}, {"pki", "crl", "--dir", pkiDir}} {
		if code, _, errs := run(t, args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
	}
	code, out, errs = run(t, "--check-config", shipped)
	if code != 0 || !strings.Contains(out, "OK: 3 identities (2 cert, 1 psk)") {
		t.Errorf("good config: code %d, out %q, err %q", code, out, errs)
	}
	// A key of another certificate, group-readable, and a missing secret
	// file: all three in one run.
	if code, _, errs := run(t, "pki", "issue", "other", "--kind", "gateway", "--dir", pkiDir); code != 0 {
		t.Fatal(errs)
	}
	if err := os.Rename(filepath.Join(pkiDir, "certs", "other.key"), filepath.Join(pkiDir, "certs", "gw1.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(pkiDir, "certs", "gw1.key"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(filepath.Dir(shipped), "secrets", "site-hall7.ppp")); err != nil {
		t.Fatal(err)
	}
	code, _, errs = run(t, "check-config", shipped)
	for _, want := range []string{"certificate \"gw1\" and its key do not match", "is accessible by group or others (mode 0640): run chmod 600", "site-hall7.ppp"} {
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("broken PKI: code %d, stderr %q; want 1 and %q", code, errs, want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("psk: {shared: x}\nlisten:\n  ike_port: 70000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = run(t, "check-config", bad)
	if code != 1 || !strings.Contains(errs, bad+":3: listen.ike_port 70000 out of range") {
		t.Errorf("bad config: code %d, stderr %q", code, errs)
	}
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: code %d, want 2", code)
	}
}

func TestPKICommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"pki", "init", "--dir", dir, "--cn", "Test CA"}, `created CA "Test CA"`},
		{[]string{"pki", "issue", "site-a", "--dir", dir, "--san", "site-a.example.net", "--san", "203.0.113.9"}, "SANs site-a.example.net,203.0.113.9"},
		{[]string{"pki", "issue", "dev-1", "--dir", dir, "--kind", "device", "--days", "7", "--key", "rsa"}, `issued device certificate "dev-1"`},
		{[]string{"pki", "list", "--dir", dir, "--expiring", "30d"}, "dev-1"},
		{[]string{"pki", "revoke", "dev-1", "--dir", dir}, `revoked "dev-1"`},
		{[]string{"pki", "crl", "--dir", dir}, "1 revoked"},
	}
	for _, s := range steps {
		code, out, errs := run(t, s.args...)
		if code != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("%v: code %d out %q err %q; want %q", s.args, code, out, errs, s.want)
		}
	}
	_, out, _ := run(t, "pki", "list", "--dir", dir, "--expiring", "30d")
	if strings.Contains(out, "dev-1") || strings.Contains(out, "site-a") {
		t.Errorf("list after revoke: %q, want neither revoked dev-1 nor far-off site-a", out)
	}
	if code, _, errs := run(t, "pki", "issue", "site-a", "--dir", dir); code != 1 || !strings.Contains(errs, "exists") {
		t.Errorf("duplicate issue: code %d err %q", code, errs)
	}
}

func TestClientConfigCommand(t *testing.T) {
	code, out, errs := run(t, "client-config", "ops-laptop", "--format", "windows", "--gateway", "vpn.example.net", "-c", testenv.ExampleConfig(t, "gateway.yaml"))
	if code != 0 || !strings.Contains(out, "Add-VpnConnection -Name 'fleetgate' -ServerAddress 'vpn.example.net' -TunnelType L2tp") {
		t.Errorf("code %d out %q err %q", code, out, errs)
	}
	if code, _, errs := run(t, "client-config", "nobody", "--gateway", "x", "-c", testenv.ExampleConfig(t, "gateway.yaml")); code != 1 || !strings.Contains(errs, "no such identity") {
		t.Errorf("unknown identity: code %d err %q", code, errs)
	}
}

// TestRunAndStatus starts the daemon in userspace mode (no root), asks it
// for its status over the unix socket, and stops it.
func TestRunAndStatus(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "gw.sock")
	cfgPath := filepath.Join(dir, "gw.yaml")
	cfg := fmt.Sprintf("listen: {ike_port: 1500, natt_port: 14500}\npsk: {shared: x}\ndataplane: {mode: userspace}\nmetrics: {listen: \"127.0.0.1:0\"}\nstatus: {socket: %q}\nlog: {level: info}\nidentities:\n  - {name: a, ppp: {password: p}}\n", sock)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan os.Signal, 1)
	done := make(chan int, 1)
	logs := &lockedBuffer{}
	go func() { done <- Run(ctx, []string{"run", "-c", cfgPath}, &bytes.Buffer{}, logs, nil, reload) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("status socket never appeared")
		}
		time.Sleep(20 * time.Millisecond) // polling a file another goroutine creates; no channel to wait on
	}
	code, out, errs := run(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "engine not linked, 0 session(s)") || !strings.Contains(out, "IDENTITY") {
		t.Errorf("status: code %d out %q err %q", code, out, errs)
	}
	// The trap: `gateway -c FILE status` shows status (it used to
	// start a second daemon); the swanctl-like verbs use the same socket,
	// found through -c before or after the verb.
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode: %v %v, want 0660", fi, err)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-c", cfgPath, "status"}, 0, "engine not linked, 0 session(s)"},
		{[]string{"sessions", "-c", cfgPath, "--json"}, 0, `"sessions": []`}, // fleetview.Sessions, as /api/sessions
		{[]string{"-c", cfgPath, "sessions"}, 0, "IDENTITY"},
		{[]string{"-c", cfgPath, "sas", "--json"}, 0, "[]"},
		{[]string{"-c", cfgPath, "sas"}, 0, "ESP SUITE"},
		{[]string{"-c", cfgPath, "sessions", "terminate", "a"}, 1, `no session of identity "a"`},
		{[]string{"-c", cfgPath, "sessions", "terminate"}, 2, "missing IDENTITY"},
	} {
		code, out, errs := run(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errs, tt.want) {
			t.Errorf("%v: code %d out %q err %q; want %d containing %q", tt.args, code, out, errs, tt.code, tt.want)
		}
	}
	// A reload with a broken file is refused and the daemon keeps running.
	if err := os.WriteFile(cfgPath, []byte("listen: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- os.Interrupt
	logs.waitFor(t, "reload refused")
	code, _, _ = run(t, "status", "--socket", sock)
	if code != 0 {
		t.Error("daemon not answering after a refused reload")
	}
	// A good reload adds an identity.
	if err := os.WriteFile(cfgPath, []byte(cfg+"  - {name: b, ppp: {password: q}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- os.Interrupt
	logs.waitFor(t, `"added":["b"]`)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Error("status socket left behind")
	}
}

// lockedBuffer is a log sink safe for the daemon's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls the daemon's log for s (the reload runs on its goroutine
// and the log is what it produces).
func (l *lockedBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q:\n%s", s, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckFleetCommand(t *testing.T) {
	code, out, errs := run(t, "--check-config", "--fleet", testenv.ExampleConfig(t, "fleet/fleet.yaml"))
	if code != 0 || !strings.Contains(out, "OK: 2 gateways, slices disjoint") || !strings.Contains(out, "slice 10.10.0.64-10.10.0.127") {
		t.Errorf("example fleet: code %d, out %q, err %q", code, out, errs)
	}
	dir := t.TempDir()
	for name, s := range map[string]string{
		"a.yaml":     "psk: {shared: x}\npool: {prefix: 10.10.0.0/24, slice: 10.10.0.0/25}\n",
		"b.yaml":     "psk: {shared: x}\npool: {prefix: 10.10.0.0/24, slice: 10.10.0.100-10.10.0.120}\n",
		"fleet.yaml": "gateways: [a.yaml, b.yaml]\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errs = run(t, "check-config", "--fleet", filepath.Join(dir, "fleet.yaml"))
	if code != 1 || !strings.Contains(errs, "b.yaml:2: pool.slice 10.10.0.100-10.10.0.120 overlaps 10.10.0.1-10.10.0.127") {
		t.Errorf("overlapping fleet: code %d, stderr %q", code, errs)
	}
}

func TestServeCRL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if code, _, errs := run(t, "pki", "init", "--dir", dir); code != 0 {
		t.Fatalf("pki init: %s", errs)
	}
	if code, _, errs := run(t, "pki", "issue", "hall7", "--dir", dir); code != 0 {
		t.Fatalf("pki issue: %s", errs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"pki", "serve-crl", "--dir", dir, "--listen", "127.0.0.1:0"}, &out, &out, nil, nil)
	}()
	re := regexp.MustCompile(`at (http://\S+/crl.pem)`)
	var url string
	for deadline := time.Now().Add(5 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		t.Fatalf("serve-crl did not start: %s", out.String())
	}
	fetch := func() *x509.RevocationList {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("not PEM: %q", b)
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return crl
	}
	ca, err := pemfile.ReadCert(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pemfile.ReadCert(filepath.Join(dir, "certs", "hall7.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ocspStatus := func() int {
		r, err := pki.QueryOCSP(context.Background(), http.DefaultClient, strings.TrimSuffix(url, "/crl.pem")+"/ocsp", leaf, ca, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	if n := len(fetch().RevokedCertificateEntries); n != 0 {
		t.Errorf("fresh CRL lists %d certificates", n)
	}
	if st := ocspStatus(); st != ocsp.Good {
		t.Errorf("OCSP status before revoke %d, want good", st)
	}
	if code, _, errs := run(t, "pki", "revoke", "hall7", "--dir", dir); code != 0 {
		t.Fatalf("pki revoke: %s", errs)
	}
	if n := len(fetch().RevokedCertificateEntries); n != 1 {
		t.Errorf("after revoke the served CRL lists %d certificates, want 1", n)
	}
	if st := ocspStatus(); st != ocsp.Revoked {
		t.Errorf("OCSP status after revoke %d, want revoked", st)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("serve-crl exit %d: %s", code, out.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
