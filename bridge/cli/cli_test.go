package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/version"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "--version")
	if code != 0 || strings.TrimSpace(out) != "bridge "+version.String() {
		t.Fatalf("got %d %q, want 0 %q", code, out, "bridge "+version.String())
	}
}

func TestCheckConfig(t *testing.T) {
	// The shipped configuration names a central broker CA that is not
	// installed here: --check-config opens it and says so.
	code, out, errs := runCLI(t, "--check-config", "../../configs/bridge.yaml")
	if code != 1 || !regexp.MustCompile(`configs/bridge.yaml:\d+: mqtt.central_ca: /etc/fleetgate/central-ca.pem: missing`).MatchString(errs) {
		t.Fatalf("reference config: got %d %q %q, want 1 naming the missing mqtt.central_ca", code, out, errs)
	}
	// A certificate uplink whose every file is missing: all listed in one
	// run, each with its key and line.
	dir := t.TempDir()
	certCfg := filepath.Join(dir, "bridge.yaml")
	y := "site: s\nprefix: 10.10.8.0/24\nstate_dir: " + dir + "/state\nuplink:\n  mode: l2tp-ipsec\n  gateways: [192.0.2.1]\n" +
		"  cert: " + dir + "/site.crt\n  key: " + dir + "/site.key\n  ca: " + dir + "/ca.crt\n  gateway_id: vpn.example.net\n  crl: " + dir + "/crl.pem\n" +
		"  ppp_user: u\n  ppp_password_file: site.ppp\n"
	if err := os.WriteFile(certCfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCLI(t, "--check-config", certCfg)
	for _, want := range []string{":7: uplink.cert: " + dir + "/site.crt: missing", ":8: uplink.key: " + dir + "/site.key: missing",
		":9: uplink.ca: " + dir + "/ca.crt: missing", ":11: uplink.crl: " + dir + "/crl.pem: missing", ":13: uplink.ppp_password_file: " + dir + "/site.ppp: missing"} {
		if code != 1 || !strings.Contains(errs, certCfg+want) {
			t.Errorf("cert uplink without files: got %d %q, want 1 and %q", code, errs, certCfg+want)
		}
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("site: s\nprefix: 10.10.8.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs = runCLI(t, "--check-config", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("minimal config: got %d %q %q, want 0 ok", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("site: x\nprefix: 10.10.8.0/24\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCLI(t, "--check-config", bad)
	if code != 1 || !strings.Contains(errs, bad+":3: unknown key \"bogus\"") {
		t.Fatalf("bad config: got %d %q, want 1 naming %s:3: unknown key \"bogus\"", code, errs, bad)
	}
}

func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "bridge.yaml")
	y := "site: t\nprefix: 10.10.8.0/24\nbridge_address: 10.10.8.1\nstate_dir: " + filepath.Join(dir, "state") +
		"\ndownlink: {coap_listen: 127.0.0.1:0, advertised_host: 192.0.2.10}\ncentral_coap: 10.20.0.1:5683\n" + extra
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEndpointAddList(t *testing.T) {
	cfg := writeConfig(t, "")
	code, out, errs := runCLI(t, "-c", cfg, "endpoint", "add", "sensor-17")
	if code != 0 || !strings.Contains(out, "192.0.2.10") || !strings.Contains(errs, "10.10.8.17") {
		t.Fatalf("add: got %d stdout %q stderr %q, want snippet with 192.0.2.10 and address 10.10.8.17", code, out, errs)
	}
	code, _, errs = runCLI(t, "-c", cfg, "endpoint", "add", "pump-4", "--protocol", "mqtt")
	if code != 0 || !strings.Contains(errs, "10.10.8.4") {
		t.Fatalf("add mqtt: got %d %q, want address 10.10.8.4", code, errs)
	}
	if code, _, _ = runCLI(t, "-c", cfg, "endpoint", "add", "x-9", "--protocol", "http"); code != 2 {
		t.Fatalf("add --protocol http: got %d, want 2 (usage error)", code)
	}
	code, out, _ = runCLI(t, "-c", cfg, "endpoint", "list")
	for _, want := range []string{"sensor-17  10.10.8.17  coap", "pump-4     10.10.8.4   mqtt"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("list: got %d %q, want a row %q", code, out, want)
		}
	}
	if strings.Contains(out, "x-9") {
		t.Fatalf("list: got %q, refused endpoint x-9 listed", out)
	}
	code, _, errs = runCLI(t, "-c", cfg, "endpoint", "remove", "pump-4")
	if code != 0 || !strings.Contains(errs, "10.10.8.4") {
		t.Fatalf("remove: got %d %q, want 0 naming the freed address", code, errs)
	}
	if code, _, errs = runCLI(t, "-c", cfg, "endpoint", "remove", "pump-4"); code != 1 || !strings.Contains(errs, "pump-4") {
		t.Fatalf("remove twice: got %d %q, want 1 naming the endpoint", code, errs)
	}
	if code, out, _ = runCLI(t, "-c", cfg, "endpoint", "list"); code != 0 || strings.Contains(out, "pump-4") || !strings.Contains(out, "sensor-17") {
		t.Fatalf("list after remove: got %d %q", code, out)
	}
}

func TestUnknownCommand(t *testing.T) {
	cfg := writeConfig(t, "")
	if code, _, errs := runCLI(t, "-c", cfg, "frobnicate"); code != 2 || !strings.Contains(errs, "frobnicate") {
		t.Fatalf("got %d %q, want 2 (usage error) naming the command", code, errs)
	}
}

func TestStatus(t *testing.T) {
	cfgPath := writeConfig(t, "http_listen: 127.0.0.1:0\n")
	if code, _, errs := runCLI(t, "-c", cfgPath, "endpoint", "add", "sensor-17"); code != 0 {
		t.Fatalf("add: %s", errs)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan daemon.Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- daemon.RunWith(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemon.Options{Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	a := <-ready
	// status reads http_listen from the file: point it at the bound port.
	y, _ := os.ReadFile(cfgPath)
	y = bytes.Replace(y, []byte("127.0.0.1:0\n"), []byte(a.HTTP.String()+"\n"), 1)
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "-c", cfgPath, "status")
	if code != 0 || !strings.Contains(out, "uplink: none") || !strings.Contains(out, "sensor-17  10.10.8.17  coap   false") ||
		!strings.Contains(out, "COAP SPOOL") || !strings.Contains(out, " 0/0B") {
		t.Fatalf("status: got %d %q %q, want uplink none and an offline sensor-17 row with an empty CoAP spool", code, out, errs)
	}
	// The control socket: mode 0660, and the swanctl-like verbs over it.
	sock := cfg.ControlSocketPath()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket %s: %v %v, want a socket with mode 0660", sock, fi, err)
	}
	// --json prints the status page's view types (internal/fleetview).
	code, out, errs = runCLI(t, "endpoints", "--json", "-c", cfgPath)
	var eps fleetview.Endpoints
	if code != 0 || json.Unmarshal([]byte(out), &eps) != nil || len(eps.Endpoints) != 1 || eps.Endpoints[0].Name != "sensor-17" || eps.Endpoints[0].Addr != "10.10.8.17" {
		t.Fatalf("endpoints --json: got %d %q %q, want one sensor-17 at 10.10.8.17", code, out, errs)
	}
	var up fleetview.Uplink
	if code, out, errs = runCLI(t, "-c", cfgPath, "uplink", "--json"); code != 0 || json.Unmarshal([]byte(out), &up) != nil || up.State != "none" {
		t.Fatalf("uplink --json: got %d %q %q, want state none", code, out, errs)
	}
	// With the HTTP listener gone from the file, the socket still answers.
	y = bytes.Replace(y, []byte(a.HTTP.String()+"\n"), []byte("127.0.0.1:1\n"), 1)
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs = runCLI(t, "-c", cfgPath, "endpoints"); code != 0 || !strings.Contains(out, "sensor-17") {
		t.Fatalf("endpoints over the socket: got %d %q %q", code, out, errs)
	}
}

// TestRunBadConfig: the systemd form "run -c FILE" reads FILE (and fails
// at once, naming it, when it is invalid).
func TestRunBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(bad, []byte("site: x\nprefix: 10.10.8.0/24\nlog_level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "run", "-c", bad)
	if code != 1 || !strings.Contains(errs, bad+":3: log_level") {
		t.Fatalf("run -c bad: got %d %q, want 1 naming %s:3: log_level", code, errs, bad)
	}
}

// TestEndpointRevoke: `endpoint revoke` puts the endpoint's certificate
// serial on the site CRL (signed by the site CA, growing with every
// revocation) and removes the endpoint; a PSK endpoint is refused.
func TestEndpointRevoke(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, n := range []string{"cam-1", "cam-2"} {
		if code, _, errs := runCLI(t, "-c", cfg, "endpoint", "add", n, "--cert"); code != 0 {
			t.Fatalf("add %s: %d %q", n, code, errs)
		}
	}
	if code, _, _ := runCLI(t, "-c", cfg, "endpoint", "add", "psk-3"); code != 0 {
		t.Fatal("add psk-3")
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, ca, err := daemon.OpenRegistry(c)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, n := range []string{"cam-1", "cam-2"} {
		ep, _ := reg.ByName(n)
		serials = append(serials, ep.CertSerial)
		code, _, errs := runCLI(t, "-c", cfg, "endpoint", "revoke", n)
		if code != 0 || !strings.Contains(errs, ep.CertSerial) || !strings.Contains(errs, "crl.pem") {
			t.Fatalf("revoke %s: %d %q", n, code, errs)
		}
	}
	got, err := ca.Revoked()
	if err != nil || strings.Join(got, ",") != strings.Join(serials, ",") {
		t.Fatalf("site CRL: %v, %v; want %v", got, err, serials)
	}
	if code, out, _ := runCLI(t, "-c", cfg, "endpoint", "list"); code != 0 || strings.Contains(out, "cam-") {
		t.Fatalf("list after revoke: %q", out)
	}
	if code, _, errs := runCLI(t, "-c", cfg, "endpoint", "revoke", "psk-3"); code != 1 || !strings.Contains(errs, "endpoint remove") {
		t.Fatalf("revoke a PSK endpoint: %d %q", code, errs)
	}
}
