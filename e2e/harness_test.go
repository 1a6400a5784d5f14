package e2e

// The harness: the real ./gateway and ./bridge binaries in the namespace
// topology of internal/netns (with NAT):
//
//	sensors 172.16.1.2 — edge 172.16.1.1 / 192.168.1.2 — nat (nftables masquerade)
//	  — wan — gw 203.0.113.2 (gateway daemon, TUN fg0, pool 10.10.0.0/24,
//	  framed route 10.10.8.0/24 → the bridge) — central 10.200.0.2
//
// The gateway runs in gw with the TUN data plane; central's default route is
// gw, so central reaches every VPN address (10.10.x) through the kernel and
// the TUN. The bridge runs in edge with its userspace stack (no TUN); its
// DTLS/CoAP (5684) and MQTT (8883) listeners are on the edge's sensors-side
// address 172.16.1.1, /status and /metrics on 127.0.0.1:9420 inside edge.
//
// Usage (every test needs root; one topology per test, all removed at
// cleanup, daemons killed by PID, their logs written to files under
// Env.Dir and dumped into the test log when the test fails):
//
//	env := Setup(t, Options{Endpoints: []EndpointSpec{
//		{Name: "sensor-17"},                  // DTLS PSK, address 10.10.8.17
//		{Name: "sensor-20", Cert: true},      // DTLS ECDSA certificate
//		{Name: "pump-4", Protocol: "mqtt"},   // MQTT (needs mqtt: in BridgeYAML)
//	}, BridgeYAML: "mqtt: {enabled: true, central: 10.200.0.2:1883, central_tls: false}\n"})
//	// Setup returns with the gateway and bridge running and the uplink up.
//	ep := env.Endpoint("sensor-17")   // ep.Addr, ep.Identity, ep.PSK, ep.CertFile...
//	env.Sensors.Command(...)          // run a device; env.Central for services
//	env.Metric(`uplink_up`)           // a /metrics series (exact name{labels})
//	env.RestartGateway(); env.KillBridge(); env.StartBridge(); env.WaitUplinkUp(30*time.Second)
//	env.Topo.CutWAN(t); env.Topo.RestoreWAN(t)
//
// Options.NoStart leaves both daemons stopped (configs written, endpoints
// provisioned) for tests that start them themselves. AddEndpoint provisions
// one more endpoint at run time (`bridge endpoint add` + SIGHUP). The
// binaries are built once per test binary (Bin).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Fixed addresses of the harness topology.
var (
	// SitePrefix is the bridge's routed prefix (framed route at the gateway).
	SitePrefix = netip.MustParsePrefix("10.10.8.0/24")
	// PoolPrefix is the gateway's IPCP pool.
	PoolPrefix = netip.MustParsePrefix("10.10.0.0/24")
	// CentralAddr is the central host's address (behind gw).
	CentralAddr = netip.MustParseAddr("10.200.0.2")
	// BridgeLAN is the bridge's sensors-side address (edge).
	BridgeLAN = netip.MustParseAddr("172.16.1.1")
	// GatewayPublic is the gateway's public address (gw).
	GatewayPublic = netip.MustParseAddr("203.0.113.2")
)

const (
	// CoAPSPort and MQTTSPort are the bridge's device listeners on BridgeLAN.
	CoAPSPort = 5684
	MQTTSPort = 8883
	// bridgeHTTP is /status and /metrics inside edge.
	bridgeHTTP = "127.0.0.1:9420"
	// gatewayHTTP is the gateway's /metrics inside gw.
	gatewayHTTP = "127.0.0.1:9410"

	sitePSK  = "e2e-site-psk-7f3a"
	pppUser  = "plant-a"
	pppPass  = "e2e-ppp-pw-plant-a"
	siteName = "plant-a"
	siteID   = "plant-a.sites.example" // the bridge's IKE identity
)

// Status is the bridge's /status document (the fields of
// bridge/daemon.Status the tests use; decoded from JSON so that the e2e
// tests depend only on the binaries).
type Status struct {
	Uplink    string           `json:"uplink"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one endpoint in Status.
type EndpointStatus struct {
	Name        string    `json:"name"`
	Addr        string    `json:"addr"`
	Protocol    string    `json:"protocol"`
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen"`
	Queued      int       `json:"queued"`
	Relay       string    `json:"relay"`
	BytesQueued int64     `json:"bytes_queued"`
	Spooled     int       `json:"spooled"` // CoAP telemetry in the spool
	BytesIn     uint64    `json:"bytes_in"`
	BytesOut    uint64    `json:"bytes_out"`
}

// Options configure Setup.
type Options struct {
	// Endpoints are provisioned with `bridge endpoint add` before the
	// bridge starts.
	Endpoints []EndpointSpec
	// BridgeYAML is appended to the bridge configuration (extra top-level
	// sections, e.g. "mqtt: {...}").
	BridgeYAML string
	// UplinkYAML is appended inside the bridge's uplink: section (indent
	// each line with two spaces), e.g. "  dpd_interval: 2s\n"; a key given
	// here must not be one the harness already sets (see bridgeConfig).
	UplinkYAML string
	// NoStart leaves the gateway and the bridge stopped.
	NoStart bool
	// UplinkCert authenticates the uplink with certificates from
	// `gateway pki` (CA, gateway and site certificates in Dir/pki)
	// instead of the shared PSK.
	UplinkCert bool
	// GatewayIdentities is appended to the gateway's identities: list
	// (YAML list items indented two spaces); lines at column 0 after them
	// are further top-level sections.
	GatewayIdentities string
	// IPv6Outer builds the topology without the NAT and with an IPv6-only
	// WAN (edge — wan — gw over 2001:db8:1::/64 and 2001:db8:2::/64, no
	// IPv4 there), IPv6 on gw — central, the gateway listening on ::, the
	// site's ipv6_prefix SitePrefix6 on both ends and central_coap on
	// CentralAddr6 (see ipv6_test.go). PSK uplink only.
	IPv6Outer bool
}

// EndpointSpec is one `bridge endpoint add NAME [--protocol P] [--cert]
// [--allow A]...`.
type EndpointSpec struct {
	Name     string
	Protocol string // "coap" (default) or "mqtt"
	Cert     bool
	Allow    []string
}

// Endpoint is a provisioned endpoint as `bridge endpoint add` printed it.
type Endpoint struct {
	Name     string
	Protocol string
	// Addr is the endpoint's stable VPN address in SitePrefix.
	Addr netip.Addr
	// Identity and PSK (text) for PSK endpoints.
	Identity, PSK string
	// CertFile, KeyFile (the device's ECDSA P-256 certificate and key) and
	// CAFile (the site CA) are PEM files in Env.Dir, for cert endpoints.
	CertFile, KeyFile, CAFile string
	// Snippet is what `endpoint add` printed.
	Snippet string
}

// Env is one running topology with its daemons.
type Env struct {
	T    testing.TB
	Topo *netns.Topology
	// Hosts of the topology.
	Sensors, Edge, NAT, WAN, GW, Central *netns.Host
	// Dir holds configs, state, credentials and logs.
	Dir string
	// GatewayConfig and BridgeConfig are the config file paths.
	GatewayConfig, BridgeConfig string

	mu        sync.Mutex
	gw, br    *netns.Proc
	starts    map[string]int
	endpoints map[string]*Endpoint
}

var (
	binMu  sync.Mutex
	binDir string
	built  = map[string]error{}
)

// TestMain builds nothing up front (Bin builds on first use), removes the
// binaries afterwards and fails the run if goroutines started by the tests
// (devices, sinks, clients) are still running 5 s after the last test:
// with parallel tests a per-test check would see its neighbours'.
func TestMain(m *testing.M) {
	before := goroutines()
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	var leaked []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaked = leaked[:0]
		for id, stack := range goroutines() {
			if _, ok := before[id]; !ok {
				leaked = append(leaked, stack)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(leaked) > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "e2e: %d goroutine(s) leaked by the tests:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

// goroutines maps "goroutine N" to its stack, except this one's.
func goroutines() map[string]string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	m := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the caller
			continue
		}
		head, _, _ := strings.Cut(g, " [")
		m[head] = g
	}
	return m
}

// Bin returns the path of one of the module's commands ("gateway",
// "bridge", "firmware-sim", ...), built once per test binary (gateway and
// bridge together on first use).
func Bin(t testing.TB, name string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if binDir == "" {
		d, err := os.MkdirTemp("", "fg-e2e-bin-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	err, ok := built[name]
	if !ok {
		names := []string{name}
		if name == "gateway" || name == "bridge" {
			names = []string{"gateway", "bridge"}
		}
		args := []string{"build", "-o", binDir + "/"}
		for _, n := range names {
			args = append(args, "./"+n)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = ".." // module root
		if out, cerr := cmd.CombinedOutput(); cerr != nil {
			err = fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), cerr, out)
		}
		for _, n := range names {
			built[n] = err
		}
	}
	if err != nil {
		t.Fatalf("e2e: building %s: %v", name, err)
	}
	return filepath.Join(binDir, name)
}

// Setup builds the topology, writes and checks both configurations,
// provisions opts.Endpoints and (unless opts.NoStart) starts the gateway
// and the bridge and waits for the uplink.
func Setup(t testing.TB, opts Options) *Env {
	t.Helper()
	testenv.RequireRoot(t)
	for _, b := range []string{"nft", "ip", "ss"} {
		testenv.RequireBinary(t, b)
	}
	Bin(t, "bridge")
	t0 := time.Now()
	topo := netns.New(t, netns.Options{NAT: !opts.IPv6Outer})
	e := &Env{
		T: t, Topo: topo,
		Sensors: topo.Host("sensors"), Edge: topo.Host("edge"),
		WAN: topo.Host("wan"), GW: topo.Host("gw"), Central: topo.Host("central"),
		Dir:       t.TempDir(),
		starts:    map[string]int{},
		endpoints: map[string]*Endpoint{},
	}
	if opts.IPv6Outer {
		e.ipv6Outer() // no nat host: Env.NAT stays nil
	} else {
		e.NAT = topo.Host("nat")
	}
	e.GatewayConfig = filepath.Join(e.Dir, "gateway.yaml")
	e.BridgeConfig = filepath.Join(e.Dir, "bridge.yaml")
	if opts.UplinkCert {
		e.makePKI()
	}
	e.write(e.GatewayConfig, gatewayConfig(e.Dir, opts))
	e.write(e.BridgeConfig, bridgeConfig(e.Dir, opts))
	e.mustRun(nil, Bin(t, "gateway"), "--check-config", e.GatewayConfig)
	e.mustRun(nil, Bin(t, "bridge"), "--check-config", e.BridgeConfig)
	for _, s := range opts.Endpoints {
		e.provision(s)
	}
	t1 := time.Now()
	if !opts.NoStart {
		e.StartGateway()
		t2 := time.Now()
		e.StartBridge()
		e.WaitUplinkUp(60 * time.Second)
		t.Logf("e2e setup: topology+configs+%d endpoints %v, gateway %v, bridge+uplink %v",
			len(opts.Endpoints), t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	}
	return e
}

// makePKI creates the central CA with `gateway pki` in Dir/pki: the
// gateway's certificate (gw1, SAN GatewayPublic, which the bridge's
// uplink.gateway_id names) and the site's (plant-a, SAN siteID), and an
// empty CRL (the bridge's uplink.crl).
func (e *Env) makePKI() {
	e.T.Helper()
	gw, dir := Bin(e.T, "gateway"), filepath.Join(e.Dir, "pki")
	e.mustRun(nil, gw, "pki", "init", "--dir", dir)
	e.mustRun(nil, gw, "pki", "issue", "gw1", "--dir", dir, "--kind", "gateway", "--san", GatewayPublic.String())
	e.mustRun(nil, gw, "pki", "issue", siteName, "--dir", dir, "--kind", "site", "--san", siteID)
	e.mustRun(nil, gw, "pki", "crl", "--dir", dir)
}

func gatewayConfig(dir string, opts Options) string {
	auth, pkiSection := "psk", ""
	listen, allow6, prefix6 := "0.0.0.0", "", ""
	if opts.IPv6Outer {
		listen, allow6, prefix6 = `"::"`, ipv6PolicyRule, ipv6IdentityKey
	}
	if opts.UplinkCert {
		auth = "cert\n    id: " + siteID
		pkiSection = fmt.Sprintf("pki: {dir: %q, ca: ca.crt, cert: certs/gw1.crt, key: certs/gw1.key, crl: crl.pem}\n", filepath.Join(dir, "pki"))
	}
	return fmt.Sprintf(`# e2e gateway (written by e2e/harness_test.go)
listen: {address: %s, ike_port: 500, natt_port: 4500, l2tp_port: 1701}
psk: {shared: %q}
pool: {prefix: %s, gateway: 10.10.0.1}
mtu: 1400
push_routes: [10.200.0.0/24]
dataplane: {mode: tun, tun: fg0}
policy: {default: deny}
policies:
  central:
    default: deny
    allow:
      - {dst: 10.200.0.0/24}
%sidentities:
  - name: %s
    auth: %s
    ppp: {user: %s, password: %q, methods: [mschapv2, chap]}
    routes: [%s]
    policy: central
%s%smetrics: {listen: %q}
log: {level: debug, format: json}
%s`, listen, sitePSK, PoolPrefix, allow6, siteName, auth, pppUser, pppPass, SitePrefix, prefix6, opts.GatewayIdentities, gatewayHTTP, pkiSection)
}

func bridgeConfig(dir string, opts Options) string {
	cred := fmt.Sprintf("psk: %q", sitePSK)
	if opts.UplinkCert {
		p := filepath.Join(dir, "pki")
		cred = fmt.Sprintf("cert: %q\n  key: %q\n  ca: %q\n  gateway_id: %s\n  crl: %q", filepath.Join(p, "certs", siteName+".crt"),
			filepath.Join(p, "certs", siteName+".key"), filepath.Join(p, "ca.crt"), GatewayPublic, filepath.Join(p, "crl.pem"))
	}
	gateway, central, prefix6 := netip.AddrPortFrom(GatewayPublic, 500), CentralAddr.String()+":5683", ""
	if opts.IPv6Outer {
		gateway, central, prefix6 = netip.AddrPortFrom(GatewayPublic6, 500), netip.AddrPortFrom(CentralAddr6, 5683).String(), "ipv6_prefix: "+SitePrefix6.String()+"\n"
	}
	return fmt.Sprintf(`# e2e bridge (written by e2e/harness_test.go)
site: %s
prefix: %s
%sbridge_address: 10.10.8.1
state_dir: %s
downlink:
  coap_listen: "%s:%d"
  advertised_host: %s
  queue_ttl: 20s
central_coap: %q
http_listen: %q
log_level: debug
log_format: json
uplink:
  mode: l2tp-ipsec
  gateways: ["%s"]
  nat_t_port: 4500
  %s
  local_id: %s
  ppp_user: %s
  ppp_password: %q
  esp_proposals: aes128gcm16
  min_backoff: 500ms
  max_backoff: 4s
%s%s`, siteName, SitePrefix, prefix6, filepath.Join(dir, "bridge-state"), BridgeLAN, CoAPSPort, BridgeLAN,
		central, bridgeHTTP, gateway, cred, siteID, pppUser, pppPass, opts.UplinkYAML, opts.BridgeYAML)
}

func (e *Env) write(path, s string) {
	e.T.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		e.T.Fatal(err)
	}
}

// mustRun runs a command in h (nil: root namespace) and returns its
// stdout; stderr goes to the error.
func (e *Env) mustRun(h *netns.Host, name string, args ...string) string {
	e.T.Helper()
	cmd := h.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.T.Fatalf("e2e: %s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// startDaemon starts name's binary in h with its output in a log file
// (dumped into the test log if the test fails).
func (e *Env) startDaemon(h *netns.Host, name string, args ...string) *netns.Proc {
	e.T.Helper()
	e.mu.Lock()
	e.starts[name]++
	n := e.starts[name]
	e.mu.Unlock()
	logPath := filepath.Join(e.Dir, fmt.Sprintf("%s-%d.log", name, n))
	f, err := os.Create(logPath)
	if err != nil {
		e.T.Fatal(err)
	}
	t := e.T
	// Registered before netns.Start's cleanup, so it runs after the
	// process was stopped.
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			t.Logf("---- %s (%s), last 200 lines:\n%s", name, logPath, tail(logPath, 200))
		}
	})
	cmd := h.Command(Bin(t, name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	return netns.Start(t, cmd)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns everything the n-th start (from 1) of daemon name
// ("gateway", "bridge") wrote so far.
func (e *Env) Log(name string, n int) string {
	b, _ := os.ReadFile(filepath.Join(e.Dir, fmt.Sprintf("%s-%d.log", name, n)))
	return string(b)
}

// StartGateway starts the gateway daemon in gw and waits until its
// /metrics answers (the engine and TUN are up by then).
func (e *Env) StartGateway() {
	e.T.Helper()
	p := e.startDaemon(e.GW, "gateway", "run", "-c", e.GatewayConfig)
	e.mu.Lock()
	e.gw = p
	e.mu.Unlock()
	e.waitFor("gateway listening", 20*time.Second, p, func() bool {
		out, _ := e.GW.Command("ss", "-Hlun").Output()
		return bytes.Contains(out, []byte(":4500 ")) && bytes.Contains(out, []byte(":500 ")) &&
			e.get(e.GW, gatewayHTTP, "/metrics") != nil
	})
}

// StopGateway stops the gateway with SIGTERM (SIGKILL after 2 s).
func (e *Env) StopGateway() {
	e.mu.Lock()
	p := e.gw
	e.gw = nil
	e.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// RestartGateway stops and starts the gateway (its session state is lost;
// the bridge has to reconnect).
func (e *Env) RestartGateway() {
	e.T.Helper()
	e.StopGateway()
	e.StartGateway()
}

// GatewayMetrics returns the gateway's /metrics text.
func (e *Env) GatewayMetrics() string {
	e.T.Helper()
	b := e.get(e.GW, gatewayHTTP, "/metrics")
	if b == nil {
		e.T.Fatal("e2e: gateway /metrics not reachable")
	}
	return string(b)
}

// StartBridge starts the bridge daemon in edge and waits for its /status
// (not for the uplink: see WaitUplinkUp).
func (e *Env) StartBridge() {
	e.T.Helper()
	p := e.startDaemon(e.Edge, "bridge", "run", "-c", e.BridgeConfig)
	e.mu.Lock()
	e.br = p
	e.mu.Unlock()
	e.waitFor("bridge /status", 20*time.Second, p, func() bool { return e.get(e.Edge, bridgeHTTP, "/status") != nil })
}

// StopBridge stops the bridge with SIGTERM (SIGKILL after 2 s).
func (e *Env) StopBridge() {
	e.mu.Lock()
	p := e.br
	e.br = nil
	e.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// KillBridge kills the bridge with SIGKILL (a crash or power loss).
func (e *Env) KillBridge() {
	e.T.Helper()
	e.mu.Lock()
	p := e.br
	e.br = nil
	e.mu.Unlock()
	if p == nil {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		e.T.Fatalf("e2e: bridge %d did not die from SIGKILL", p.PID)
	}
}

// RestartBridge stops (SIGTERM) and starts the bridge and waits for the
// uplink.
func (e *Env) RestartBridge() {
	e.T.Helper()
	e.StopBridge()
	e.StartBridge()
	e.WaitUplinkUp(60 * time.Second)
}

// BridgeProc returns the running bridge process (nil when stopped).
func (e *Env) BridgeProc() *netns.Proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.br
}

// GatewayProc returns the running gateway process (nil when stopped).
func (e *Env) GatewayProc() *netns.Proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gw
}

// waitFor polls cond every 100 ms until timeout; it fails the test if the
// process p exits first.
func (e *Env) waitFor(what string, timeout time.Duration, p *netns.Proc, cond func() bool) {
	e.T.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p != nil {
			select {
			case <-p.Done():
				e.T.Fatalf("e2e: waiting for %s: process %d exited: %v", what, p.PID, p.Err())
			default:
			}
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("e2e: %s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Poll calls cond every 100 ms until it returns true or timeout passes; it
// reports whether cond became true.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fetches http://addr/path from inside h; nil on any error.
func (e *Env) get(h *netns.Host, addr, path string) []byte {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: h.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}

// Status returns the bridge's /status.
func (e *Env) Status() Status {
	e.T.Helper()
	st, err := e.status()
	if err != nil {
		e.T.Fatal(err)
	}
	return st
}

func (e *Env) status() (Status, error) {
	var st Status
	b := e.get(e.Edge, bridgeHTTP, "/status")
	if b == nil {
		return st, errors.New("e2e: bridge /status not reachable")
	}
	return st, json.Unmarshal(b, &st)
}

// WaitUplinkUp waits until the bridge's /status says the uplink is up and
// returns that status.
func (e *Env) WaitUplinkUp(timeout time.Duration) Status {
	e.T.Helper()
	var st Status
	last := ""
	if !Poll(timeout, func() bool {
		s, err := e.status()
		if err != nil {
			last = err.Error()
			return false
		}
		st, last = s, s.Uplink
		return strings.HasPrefix(s.Uplink, "up")
	}) {
		e.T.Fatalf("e2e: uplink not up within %v; last status: %s", timeout, last)
	}
	return st
}

// Metrics returns the bridge's /metrics text.
func (e *Env) Metrics() string {
	e.T.Helper()
	b := e.get(e.Edge, bridgeHTTP, "/metrics")
	if b == nil {
		e.T.Fatal("e2e: bridge /metrics not reachable")
	}
	return string(b)
}

// Metric returns the value of one series of the bridge's /metrics, named
// exactly as exposed (`name` or `name{label="v",...}`, labels in the
// exposition's order); it fails the test if the series is absent.
func (e *Env) Metric(series string) float64 {
	e.T.Helper()
	v, ok := MetricValue(e.Metrics(), series)
	if !ok {
		e.T.Fatalf("e2e: bridge /metrics has no series %s", series)
	}
	return v
}

// MetricValue finds series in a Prometheus text exposition.
func MetricValue(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 || l[:i] != series {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		return v, err == nil
	}
	return 0, false
}

var (
	reDefine  = regexp.MustCompile(`(?m)^#define (FLEETGATE_[A-Z_]+) "(.*)"`)
	rePEMLine = regexp.MustCompile(`^\s*"(.*)\\n"\s*\\?$`)
)

// cDefines parses the simple string defines of a snippet.
func cDefines(s string) map[string]string {
	m := map[string]string{}
	for _, x := range reDefine.FindAllStringSubmatch(s, -1) {
		m[x[1]] = x[2]
	}
	return m
}

// cPEM extracts a multi-line PEM define (`#define NAME \` then quoted lines).
func cPEM(s, name string) []byte {
	lines := strings.Split(s, "\n")
	var b strings.Builder
	for i, l := range lines {
		if strings.TrimSpace(l) != "#define "+name+" \\" {
			continue
		}
		for _, pl := range lines[i+1:] {
			m := rePEMLine.FindStringSubmatch(pl)
			if m == nil {
				break
			}
			b.WriteString(m[1] + "\n")
			if !strings.HasSuffix(strings.TrimSpace(pl), "\\") {
				break
			}
		}
		break
	}
	return []byte(b.String())
}

// provision runs `bridge endpoint add` and records what it printed.
func (e *Env) provision(s EndpointSpec) *Endpoint {
	e.T.Helper()
	args := []string{"-c", e.BridgeConfig, "endpoint", "add", s.Name}
	if s.Protocol != "" {
		args = append(args, "--protocol", s.Protocol)
	}
	if s.Cert {
		args = append(args, "--cert")
	}
	for _, a := range s.Allow {
		args = append(args, "--allow", a)
	}
	out := e.mustRun(nil, Bin(e.T, "bridge"), args...)
	d := cDefines(out)
	ep := &Endpoint{Name: s.Name, Protocol: s.Protocol, Snippet: out, Identity: d["FLEETGATE_PSK_IDENTITY"], PSK: d["FLEETGATE_PSK"]}
	if ep.Protocol == "" {
		ep.Protocol = "coap"
	}
	a, err := netip.ParseAddr(d["FLEETGATE_VPN_ADDR"])
	if err != nil || !SitePrefix.Contains(a) {
		e.T.Fatalf("e2e: endpoint add %s: no VPN address in SitePrefix in:\n%s", s.Name, out)
	}
	ep.Addr = a
	if s.Cert {
		for _, f := range []struct {
			define string
			path   *string
			suffix string
		}{{"FLEETGATE_DEVICE_CERT", &ep.CertFile, ".crt"}, {"FLEETGATE_DEVICE_KEY", &ep.KeyFile, ".key"}, {"FLEETGATE_CA_CERT", &ep.CAFile, "-ca.crt"}} {
			pem := cPEM(out, f.define)
			if !bytes.HasPrefix(pem, []byte("-----BEGIN ")) {
				e.T.Fatalf("e2e: endpoint add %s: no %s PEM in:\n%s", s.Name, f.define, out)
			}
			*f.path = filepath.Join(e.Dir, s.Name+f.suffix)
			e.write(*f.path, string(pem))
		}
	} else if ep.Identity == "" || ep.PSK == "" {
		e.T.Fatalf("e2e: endpoint add %s: no PSK identity/key in:\n%s", s.Name, out)
	}
	e.mu.Lock()
	e.endpoints[s.Name] = ep
	e.mu.Unlock()
	return ep
}

// AddEndpoint provisions an endpoint; if the bridge runs, it is sent SIGHUP
// and AddEndpoint waits until /status lists the endpoint.
func (e *Env) AddEndpoint(s EndpointSpec) *Endpoint {
	e.T.Helper()
	ep := e.provision(s)
	if p := e.BridgeProc(); p != nil {
		_ = syscall.Kill(p.PID, syscall.SIGHUP)
		e.waitFor("endpoint "+s.Name+" served after SIGHUP", 20*time.Second, p, func() bool {
			st, err := e.status()
			if err != nil {
				return false
			}
			for _, x := range st.Endpoints {
				if x.Name == s.Name {
					return true
				}
			}
			return false
		})
	}
	return ep
}

// Endpoint returns a provisioned endpoint; it fails the test if unknown.
func (e *Env) Endpoint(name string) *Endpoint {
	e.T.Helper()
	e.mu.Lock()
	ep := e.endpoints[name]
	e.mu.Unlock()
	if ep == nil {
		e.T.Fatalf("e2e: no endpoint %q provisioned", name)
	}
	return ep
}

// EndpointStatus returns the endpoint's entry in the bridge's /status.
func (e *Env) EndpointStatus(name string) (EndpointStatus, bool) {
	e.T.Helper()
	for _, x := range e.Status().Endpoints {
		if x.Name == name {
			return x, true
		}
	}
	return EndpointStatus{}, false
}

// Context returns a context bounded by d and by the test.
func (e *Env) Context(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.T.Cleanup(cancel)
	return ctx
}

// TestHarness: the topology comes up, the real bridge dials the real
// gateway through the NAT (IKE with certificates from `gateway pki`), the provisioned endpoints are listed with their
// stable addresses, and the gateway routes the site prefix into its TUN.
func TestHarness(t *testing.T) {
	t.Parallel() // own namespaces; the outage test mostly waits
	env := Setup(t, Options{UplinkCert: true, Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	st := env.Status()
	got := map[string]string{}
	for _, x := range st.Endpoints {
		got[x.Name] = x.Addr
	}
	if got["sensor-17"] != "10.10.8.17" || got["sensor-20"] != "10.10.8.20" {
		t.Fatalf("status endpoints: got %v, want sensor-17 10.10.8.17, sensor-20 10.10.8.20", got)
	}
	if v := env.Metric("uplink_up"); v != 1 {
		t.Fatalf("uplink_up = %v, want 1", v)
	}
	routes := env.mustRun(env.GW, "ip", "route", "show", "dev", "fg0")
	if !strings.Contains(routes, SitePrefix.String()) {
		t.Fatalf("gw routes on fg0: %q, want %s", routes, SitePrefix)
	}
	// The gateway's phase 1 used ECDSA-256 signatures (RFC 4754 auth
	// method 9), not the PSK (1), and the PPP session is the site's cert.
	var p1Auth int
	var peerID string
	for _, l := range strings.Split(env.Log("gateway", 1), "\n") {
		var x struct {
			Msg    string `json:"msg"`
			Auth   int    `json:"auth"`
			PeerID string `json:"peer_id"`
		}
		if json.Unmarshal([]byte(l), &x) != nil {
			continue
		}
		switch x.Msg {
		case "phase 1 established":
			p1Auth = x.Auth
		case "session established":
			if x.PeerID != "" {
				peerID = x.PeerID
			}
		}
	}
	if p1Auth != 9 || !strings.Contains(peerID, "CN="+siteName) {
		t.Fatalf("gateway log: phase 1 auth %d, session peer_id %q; want 9 (ECDSA-256) and CN=%s", p1Auth, peerID, siteName)
	}
	t.Logf("uplink: %s (IKE auth %d, peer %s); gw fg0 routes: %s", st.Uplink, p1Auth, peerID, strings.TrimSpace(routes))
}
