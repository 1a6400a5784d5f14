package e2e

// Issue 17, uplink side, with the real bridge binary in the namespace
// topology: it dials only the real gateway (a rogue holding a site
// certificate or a revoked gateway certificate of the same CA is refused
// in IKE phase 1, before PPP), and its PPP client sends no password to a
// server asking for PAP.

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// waitRefused waits until the bridge counts n refusals for reason and
// returns its log so far.
func (e *Env) waitRefused(reason string, n float64) string {
	e.T.Helper()
	series := `uplink_refused_total{reason="` + reason + `"}`
	e.waitFor(series, 60*time.Second, e.BridgeProc(), func() bool {
		v, _ := MetricValue(e.Metrics(), series)
		return v >= n
	})
	return e.Log("bridge", 1)
}

// TestUplinkRefusesRogueGateway: the gateway binary configured with (1) a
// site certificate of the fleet CA naming the gateway's address and (2) a
// gateway certificate that was revoked is refused by the bridge
// (uplink_refused_total{reason="not_gateway"}, log "uplink refused"), the
// rogue never gets as far as PPP, and the real gateway's certificate
// (gw1) is accepted afterwards by the same running bridge.
func TestUplinkRefusesRogueGateway(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{UplinkCert: true, NoStart: true})
	gwBin, dir := Bin(t, "gateway"), filepath.Join(env.Dir, "pki")
	// A second site whose certificate names the gateway's address, and a
	// gateway certificate taken out of service.
	env.mustRun(nil, gwBin, "pki", "issue", "plant-b", "--dir", dir, "--kind", "site", "--san", GatewayPublic.String())
	env.mustRun(nil, gwBin, "pki", "issue", "gw-old", "--dir", dir, "--kind", "gateway", "--san", GatewayPublic.String())
	env.mustRun(nil, gwBin, "pki", "revoke", "gw-old", "--dir", dir)
	real, err := os.ReadFile(env.GatewayConfig)
	if err != nil {
		t.Fatal(err)
	}
	rogue := func(cert string) {
		t.Helper()
		env.StopGateway()
		env.write(env.GatewayConfig, strings.ReplaceAll(string(real), "certs/gw1.", "certs/"+cert+"."))
		env.StartGateway()
	}

	rogue("plant-b")
	env.StartBridge()
	log := env.waitRefused("not_gateway", 1)
	if !strings.Contains(log, "uplink refused: the peer is not the configured gateway") || !strings.Contains(log, "plant-b") {
		t.Fatalf("bridge log has no refusal naming plant-b:\n%s", tail(filepath.Join(env.Dir, "bridge-1.log"), 20))
	}

	rogue("gw-old")
	before, _ := MetricValue(env.Metrics(), `uplink_refused_total{reason="not_gateway"}`)
	log = env.waitRefused("not_gateway", before+1)
	if !strings.Contains(log, "is revoked") {
		t.Fatalf("bridge log has no revocation refusal:\n%s", tail(filepath.Join(env.Dir, "bridge-1.log"), 20))
	}
	if v := env.Metric("uplink_up"); v != 0 {
		t.Fatalf("uplink_up = %v with a rogue gateway", v)
	}
	// Neither rogue got to PPP: no session, no PPP authentication.
	for i := 1; i <= 2; i++ {
		if l := env.Log("gateway", i); strings.Contains(l, "session established") || strings.Contains(l, `"phase":"ppp_auth"`) {
			t.Fatalf("rogue gateway %d reached PPP:\n%s", i, l)
		}
	}

	// The real gateway: the same bridge (still backing off) connects.
	env.StopGateway()
	env.write(env.GatewayConfig, string(real))
	env.StartGateway()
	st := env.WaitUplinkUp(60 * time.Second)
	refused, _ := MetricValue(env.Metrics(), `uplink_refused_total{reason="not_gateway"}`)
	t.Logf("refused %v rogue attempts; then %s", refused, st.Uplink)
}

// TestUplinkNoPasswordForPAP: a server that asks for PAP (our
// uplink/l2tpipsec server in gw, PPP methods [PAP]; the gateway daemon only
// offers MS-CHAPv2 and CHAP) gets a Nak for MS-CHAPv2 from the bridge and
// no password: its authenticator is never called, the bridge counts
// uplink_refused_total{reason="ppp_method"} and logs the refusal.
func TestUplinkNoPasswordForPAP(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{NoStart: true})
	var requests, passwords atomic.Int64
	auth := authFunc(func(_ context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
		requests.Add(1)
		if len(req.Password) > 0 {
			passwords.Add(1)
		}
		return ppp.AuthResult{Message: "no"}, nil
	})
	var srv *l2tpipsec.Server
	if err := env.GW.Do(func() error {
		var err error
		srv, err = l2tpipsec.NewServer(l2tpipsec.ServerConfig{
			IKEAddr: netip.AddrPortFrom(GatewayPublic, 500).String(), NATTAddr: netip.AddrPortFrom(GatewayPublic, 4500).String(),
			PSK:           func(netip.Addr) ([]byte, bool) { return []byte(sitePSK), true },
			Authenticator: auth, AuthMethods: []ppp.AuthMethod{ppp.AuthPAP},
			AddressFunc: func(context.Context, string) (ppp.Assignment, error) {
				return ppp.Assignment{Addr: netip.MustParseAddr("10.10.0.9")}, nil
			},
			LocalAddr: netip.MustParseAddr("10.10.0.1"),
			Logger:    slog.New(slog.DiscardHandler),
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	env.StartBridge()
	log := env.waitRefused("ppp_method", 2)
	if !strings.Contains(log, "uplink refused: the server asked for a PPP authentication method we do not allow") ||
		!strings.Contains(log, `"asked":"PAP"`) {
		t.Fatalf("bridge log has no PAP refusal:\n%s", tail(filepath.Join(env.Dir, "bridge-1.log"), 30))
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the PAP server received %d authentication requests (%d with a password), want none", n, passwords.Load())
	}
	t.Logf("2 attempts refused in PPP, 0 authentication requests reached the server (PPP links down: %d)", srv.Stats().PPP.LinksDown.Load())
}

type authFunc func(context.Context, *ppp.AuthRequest) (ppp.AuthResult, error)

func (f authFunc) Authenticate(ctx context.Context, r *ppp.AuthRequest) (ppp.AuthResult, error) {
	return f(ctx, r)
}

// TestBridgeRefusesOpenSecretFiles: the real bridge binary refuses to
// check or run a configuration whose PSK file group or others may read,
// naming file, line, key and the chmod that fixes it; after the chmod it
// accepts it.
func TestBridgeRefusesOpenSecretFiles(t *testing.T) {
	bin := Bin(t, "bridge")
	dir := t.TempDir()
	psk := filepath.Join(dir, "site.psk")
	if err := os.WriteFile(psk, []byte("a-psk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(psk, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "bridge.yaml")
	y := "site: s\nprefix: 10.10.8.0/24\nstate_dir: " + dir + "/state\nuplink:\n  mode: l2tp-ipsec\n  gateways: [192.0.2.1]\n  psk_file: site.psk\n  ppp_user: u\n  ppp_password_file: site.psk\n"
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--check-config", cfg}, {"run", "-c", cfg}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		want := cfg + ":7: uplink.psk_file: " + psk + " holds secrets but is accessible by group or others (mode 0644): run chmod 600 " + psk
		if err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("bridge %v: %v\n%s\nwant %q", args, err, out, want)
		}
	}
	if err := os.Chmod(psk, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--check-config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("after chmod 600: %v\n%s", err, out)
	}
}

// TestUplinkCRLFetchedThroughTunnel: with uplink.crl_url the bridge fetches
// the CA's CRL from a central HTTP server through the tunnel
// (uplink_crl_fetches_total{result="ok"}). The gateway runs with a gateway
// certificate (gw-old) that is revoked while the tunnel is up; the bridge's
// uplink.crl file stays the empty one. Once the fetched CRL lists gw-old
// the bridge closes the live tunnel (uplink_refused_total{reason=
// "revoked_live"}) and refuses the gateway when it dials again (reason
// "not_gateway", "is revoked").
func TestUplinkCRLFetchedThroughTunnel(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{UplinkCert: true, NoStart: true,
		UplinkYAML: "  crl_url: http://" + CentralAddr.String() + ":8080/fleet.crl\n  crl_refresh: 10s\n"})
	gwBin, dir := Bin(t, "gateway"), filepath.Join(env.Dir, "pki")
	env.mustRun(nil, gwBin, "pki", "issue", "gw-old", "--dir", dir, "--kind", "gateway", "--san", GatewayPublic.String())
	env.mustRun(nil, gwBin, "pki", "crl", "--dir", dir)
	var served atomic.Pointer[[]byte]
	readCRL := func() []byte {
		b, err := os.ReadFile(filepath.Join(dir, "crl.pem"))
		if err != nil {
			t.Fatal(err)
		}
		served.Store(&b)
		return b
	}
	fileCRL := filepath.Join(env.Dir, "bridge-file.crl") // the bridge's uplink.crl stays this empty one
	env.write(fileCRL, string(readCRL()))
	cfg, _ := os.ReadFile(env.BridgeConfig)
	env.write(env.BridgeConfig, strings.Replace(string(cfg), filepath.Join(dir, "crl.pem"), fileCRL, 1))
	g, _ := os.ReadFile(env.GatewayConfig)
	env.write(env.GatewayConfig, strings.ReplaceAll(string(g), "certs/gw1.", "certs/gw-old."))
	var ln net.Listener
	if err := env.Central.Do(func() (err error) { ln, err = net.Listen("tcp", CentralAddr.String()+":8080"); return }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(*served.Load()) }),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	env.StartGateway()
	env.StartBridge()
	env.WaitUplinkUp(60 * time.Second)
	env.waitFor("first CRL fetch", 60*time.Second, env.BridgeProc(), func() bool {
		v, _ := MetricValue(env.Metrics(), `uplink_crl_fetches_total{result="ok"}`)
		return v >= 1
	})
	env.mustRun(nil, gwBin, "pki", "revoke", "gw-old", "--dir", dir)
	readCRL()
	log := env.waitRefused("revoked_live", 1)
	if !strings.Contains(log, "the gateway's certificate was revoked; closing the live tunnel") {
		t.Fatalf("bridge log lacks the live-tunnel refusal:\n%s", tail(filepath.Join(env.Dir, "bridge-1.log"), 30))
	}
	log = env.waitRefused("not_gateway", 1)
	if !strings.Contains(log, "is revoked") || !strings.Contains(log, `"msg":"uplink CRL fetched"`) {
		t.Fatalf("bridge log lacks the fetch or the revocation refusal:\n%s", tail(filepath.Join(env.Dir, "bridge-1.log"), 30))
	}
	if v := env.Metric("uplink_up"); v != 0 {
		t.Fatalf("uplink_up = %v with the revoked gateway", v)
	}
	t.Logf("live tunnel to the revoked gateway closed after the fetched CRL; its next phase 1 refused")
}
