package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	mqttserver "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	gconfig "github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/ipstack"
)

const gwPSK = "bridge-e2e-psk"

// gwYAML: a userspace-mode gateway holding the central CoAP service
// 10.20.0.1; the site identity gets the framed route 10.10.8.0/24.
const gwYAML = `
psk: {shared: ` + gwPSK + `}
pool: {prefix: 10.10.0.0/24}
push_routes: [10.20.0.0/16]
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [10.20.0.1/32]}
policies:
  central:
    allow:
      - {dst: 10.20.0.1/32}
identities:
  - {name: plant-a, ppp: {password: pw-a}, routes: [10.10.8.0/24], policy: central}
`

// startGateway runs the real gateway (server + engine, userspace data
// plane) on ephemeral loopback ports; it returns the engine and the
// central stack.
func startGateway(t *testing.T) (*server.Server, *engine.Engine, *ipstack.Stack) {
	t.Helper()
	return startGatewayWith(t, gwYAML, "127.0.0.1")
}

// startGatewayWith is startGateway with its configuration and the
// loopback address it listens on (::1 for an IPv6 outer network).
func startGatewayWith(t *testing.T, yaml, listen string) (*server.Server, *engine.Engine, *ipstack.Stack) {
	t.Helper()
	cfg, err := gconfig.Parse("gw.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ike, err := net.ListenPacket("udp", net.JoinHostPort(listen, "0"))
	if err != nil {
		t.Fatal(err)
	}
	natt, err := net.ListenPacket("udp", net.JoinHostPort(listen, "0"))
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{IKEConn: ike, NATTConn: natt})
	srv, err := server.New(cfg, server.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-eng.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway engine not ready after 10s")
	}
	us, ok := srv.Host().(*dataplane.Userspace)
	if !ok {
		t.Fatalf("gateway host is %T, want *dataplane.Userspace", srv.Host())
	}
	return srv, eng, us.Stack()
}

// coapGet sends one CON GET over c and returns the response.
func coapGet(t *testing.T, c net.Conn, path string) (codes.Code, string) {
	t.Helper()
	m := pool.NewMessage(context.Background())
	m.SetType(message.Confirmable)
	m.SetCode(codes.GET)
	m.SetMessageID(0x1234)
	m.SetToken([]byte{1, 2, 3, 4})
	if err := m.SetPath(path); err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ { // CON retransmission (RFC 7252 §4.2)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		r := pool.NewMessage(context.Background())
		if _, err := r.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
			t.Fatalf("central GET: bad response: %v", err)
		}
		body, _ := r.ReadBody()
		return r.Code(), string(body)
	}
	t.Fatal("central GET: no response after 5 tries")
	return 0, ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLoopbackEndToEnd: the real gateway (userspace) + the bridge daemon
// over a real IKEv1/ESP/L2TP/PPP uplink on loopback, no root: a PSK DTLS
// device's CoAP POST reaches the central sink from 10.10.8.17, a central
// GET to 10.10.8.17:5683 is answered by the device, /status and /metrics
// report it, and SIGHUP-style reload serves a newly provisioned endpoint.
func TestLoopbackEndToEnd(t *testing.T) {
	stacktest.CheckGoroutines(t)
	gw, eng, central := startGateway(t)
	sink, err := central.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	coaptest.Serve(t, sink, coaptest.SourceEcho)

	cfg := siteConfig(t, eng.Tunnel(), site4)
	prov, mprov := provisionSite(t, cfg)
	got := centralBroker(t, central)

	reload := make(chan struct{ n int }, 1)
	hup := make(chan os.Signal, 1)
	a, status, stop := runBridge(t, cfg, daemon.Options{Reload: hup,
		Reloaded: func(n int, err error) { reload <- struct{ n int }{n} }})
	waitFor(t, "uplink up", func() bool { return strings.HasPrefix(status().Uplink, "up") })
	// The gateway's pushed routes (DHCPINFORM over PPP) reach the status.
	waitFor(t, "pushed routes", func() bool { return strings.Contains(status().Uplink, " routes=10.20.0.0/16") })

	// Device → central, sourced from the endpoint's address.
	d := echoDevice(t, a.CoAP.String(), prov)
	postFrom(t, d, "21.5", "10.10.8.17")

	// Central → device over the uplink and the device's DTLS session.
	c, err := central.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.17:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if code, body := coapGet(t, c, "/temp"); code != codes.Content || body != "device/temp" {
		t.Fatalf("central → device: got %v %q, want 2.05 device/temp", code, body)
	}

	// MQTT device → site broker → relay from 10.10.8.4 → central broker.
	mqttTelemetry(t, a.MQTTPlain.String(), mprov, got, "10.10.8.4")

	st := status()
	var seen int
	for _, e := range st.Endpoints {
		switch e.Name {
		case "sensor-17":
			if e.Addr != "10.10.8.17" || !e.Online || e.BytesIn == 0 {
				t.Errorf("status: got %+v, want sensor-17 10.10.8.17 online with bytes", e)
			}
			seen++
		case "pump-4":
			if e.Addr != "10.10.8.4" || !e.Online || e.Protocol != "mqtt" || e.Relay == "" {
				t.Errorf("status: got %+v, want pump-4 10.10.8.4 mqtt online with a relay state", e)
			}
			seen++
		}
	}
	if seen != 2 {
		t.Fatalf("status endpoints: got %+v, want sensor-17 and pump-4", st.Endpoints)
	}
	mresp, err := http.Get("http://" + a.HTTP.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{"uplink_up 1", "uplink_connects_total 1", "coap_handshakes_ok_total 1", "proxy_upstream_total 1", "proxy_downstream_total 1", "mqttrelay_", `bridge_endpoint_online{endpoint="sensor-17"} 1`, `bridge_endpoint_bytes_total{direction="in",endpoint="sensor-17"}`} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics: no line %q", want)
		}
	}

	// Reload: an endpoint provisioned while running is served.
	reg2, ca2, err := daemon.OpenRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	prov2, err := registry.Provision(reg2, ca2, registry.Request{Name: "sensor-18"})
	if err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	if r := <-reload; r.n != 1 {
		t.Fatalf("reload added %d endpoints, want 1", r.n)
	}
	d2, err := coaptest.Dial(t, a.CoAP.String(), coaptest.Options{Identity: "sensor-18", Key: prov2.Endpoint.PSK})
	if err != nil {
		t.Fatalf("reloaded endpoint: %v", err)
	}
	postFrom(t, d2, "1", "10.10.8.18")

	// Reload: an endpoint removed while running loses its session and its
	// status row; the others keep theirs.
	if err := reg2.Remove("sensor-18"); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	if r := <-reload; r.n != 0 {
		t.Fatalf("reload after a removal added %d endpoints, want 0", r.n)
	}
	for _, e := range status().Endpoints {
		if e.Name == "sensor-18" {
			t.Fatalf("removed endpoint still in status: %+v", e)
		}
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	if resp, err := d2.Conn.Post(rctx, "/data", message.TextPlain, bytes.NewReader([]byte("2"))); err == nil {
		t.Fatalf("removed endpoint's session still relays: %v", resp.Code())
	}
	postFrom(t, d, "21.6", "10.10.8.17")

	// SIGTERM: Close tears the uplink down; the gateway sees the session go.
	if n := gw.Env().Sessions.Len(); n != 1 {
		t.Fatalf("gateway sessions before stop: got %d, want 1", n)
	}
	stop()
	waitFor(t, "gateway session removed", func() bool { return gw.Env().Sessions.Len() == 0 })
}

type centralPublish struct{ remote, topic, payload string }

// recorder is a mochi hook recording every publish with its client's
// remote address.
type recorder struct {
	mqttserver.HookBase
	got chan centralPublish
}

func (r *recorder) ID() string { return "recorder" }

func (r *recorder) Provides(b byte) bool { return b == mqttserver.OnPublish }

func (r *recorder) OnPublish(cl *mqttserver.Client, pk packets.Packet) (packets.Packet, error) {
	select {
	case r.got <- centralPublish{cl.Net.Remote, pk.TopicName, string(pk.Payload)}:
	default:
	}
	return pk, nil
}

// centralBroker runs a mochi broker on 10.20.0.1:1883 in the central
// stack (the gateway's userspace data plane).
func centralBroker(t *testing.T, central *ipstack.Stack) chan centralPublish {
	t.Helper()
	return centralBrokerAt(t, central, netip.MustParseAddrPort("10.20.0.1:1883"))
}

// centralBrokerAt is centralBroker listening on at.
func centralBrokerAt(t *testing.T, central *ipstack.Stack, at netip.AddrPort) chan centralPublish {
	t.Helper()
	ln, err := central.ListenTCP(at)
	if err != nil {
		t.Fatal(err)
	}
	srv := mqttserver.New(&mqttserver.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{got: make(chan centralPublish, 16)}
	if err := srv.AddHook(rec, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("central", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return rec.got
}

// TestUplinkFailureReported: a wrong PSK makes every attempt fail; status
// names the failed phase and /metrics counts failures by phase.
func TestUplinkFailureReported(t *testing.T) {
	_, eng, _ := startGateway(t)
	ts := eng.Tunnel()
	y := fmt.Sprintf(`site: plant-a
prefix: 10.10.8.0/24
state_dir: %s
downlink: {coap_listen: "127.0.0.1:0"}
http_listen: "127.0.0.1:0"
uplink:
  mode: l2tp-ipsec
  gateways: [%q]
  nat_t_port: %d
  psk: wrong-psk
  local_id: plant-a.sites.example
  ppp_user: plant-a
  ppp_password: pw-a
  min_backoff: 50ms
  max_backoff: 200ms
`, t.TempDir(), ts.IKEAddr().String(), ts.NATTAddr().Port())
	cfg, err := bconfig.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s, err := daemon.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.Start()
	waitFor(t, "a failed attempt in status", func() bool { return strings.Contains(s.Status().Uplink, "last_failure_phase=") })
	st := s.Status().Uplink
	if strings.HasPrefix(st, "up") {
		t.Fatalf("uplink with a wrong PSK: got %q, want not up", st)
	}
	t.Logf("status: %s", st)
	resp, err := http.Get("http://" + s.Addrs().HTTP.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "uplink_failures_by_phase_total{phase=") || !strings.Contains(string(b), "uplink_up 0") {
		t.Fatalf("/metrics: no uplink_failures_by_phase_total{phase=...} or uplink_up 0 in\n%s", b)
	}
}
