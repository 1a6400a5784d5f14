package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// gwYAML6: gwYAML with the site's IPv6 prefix (IPV6CP offered) and the
// central IPv6 address allowed by policy.
const gwYAML6 = `
psk: {shared: ` + gwPSK + `}
pool: {prefix: 10.10.0.0/24}
push_routes: [10.20.0.0/16]
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [10.20.0.1/32]}
policies:
  central:
    allow:
      - {dst: 10.20.0.1/32}
      - {dst: 2001:db8:200::10/128}
identities:
  - {name: plant-a, ppp: {password: pw-a}, routes: [10.10.8.0/24], ipv6_prefix: "2001:db8:8::/64", policy: central}
`

// TestLoopbackIPv6: the real gateway (userspace data plane) and the bridge
// daemon over an IPv6 outer network (both on ::1 only: IKE, NAT-T ESP),
// IPCP and IPV6CP on the PPP link; central at 2001:db8:200::10 reaches
// sensor-17 at its IPv6 address 2001:db8:8::17 with CoAP, the device's
// POST and the MQTT endpoint pump-4's telemetry arrive at central from
// the endpoints' IPv6 addresses (asserted at the central CoAP sink and
// broker), and the MQTT device reaches the bridge over IPv6 ([::1]).
func TestLoopbackIPv6(t *testing.T) {
	stacktest.CheckGoroutines(t)
	gw, eng, central := startGatewayWith(t, gwYAML6, "::1")
	// The central stack's IPv6 address (gateway config takes IPv4 only).
	if err := central.AddAddress(netip.MustParsePrefix("2001:db8:200::10/128")); err != nil {
		t.Fatal(err)
	}
	sink, err := central.ListenUDP(netip.MustParseAddrPort("[2001:db8:200::10]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	coaptest.Serve(t, sink, coaptest.SourceEcho)
	got := centralBrokerAt(t, central, netip.MustParseAddrPort("[2001:db8:200::10]:1883"))

	ts := eng.Tunnel()
	if !ts.IKEAddr().Addr().Is6() {
		t.Fatalf("gateway IKE on %s, want IPv6", ts.IKEAddr())
	}
	dir := t.TempDir()
	y := fmt.Sprintf(`site: plant-a
prefix: 10.10.8.0/24
ipv6_prefix: 2001:db8:8::/64
bridge_address: 10.10.8.1
state_dir: %s
downlink: {coap_listen: "[::]:0", queue_ttl: 30s}
central_coap: "[2001:db8:200::10]:5683"
http_listen: "127.0.0.1:0"
mqtt: {enabled: true, tls_listen: "[::1]:0", plain_listen: "[::1]:0", central: "[2001:db8:200::10]:1883"}
uplink:
  mode: l2tp-ipsec
  gateways: [%q]
  nat_t_port: %d
  psk: %s
  local_id: plant-a.sites.example
  ppp_user: plant-a
  ppp_password: pw-a
  esp_proposals: aes128gcm16
  min_backoff: 100ms
  max_backoff: 1s
`, dir, ts.IKEAddr().String(), ts.NATTAddr().Port(), gwPSK)
	cfg, err := bconfig.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := registry.Provision(reg, ca, registry.Request{Name: "sensor-17"})
	if err != nil {
		t.Fatal(err)
	}
	mprov, err := registry.Provision(reg, ca, registry.Request{Name: "pump-4", Protocol: registry.MQTT})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("2001:db8:8::17"); prov.Endpoint.Addr6 != want {
		t.Fatalf("sensor-17 IPv6 address %s, want %s", prov.Endpoint.Addr6, want)
	}

	ready := make(chan daemon.Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- daemon.RunWith(ctx, cfg, log, daemon.Options{Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge Run: %v", err)
		}
	})
	var a daemon.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("bridge stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("bridge not ready after 10s")
	}
	status := func() daemon.Status {
		var st daemon.Status
		resp, err := http.Get("http://" + a.HTTP.String() + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(t, "uplink up", func() bool { return strings.HasPrefix(status().Uplink, "up") })
	// The bridge's own status says IPV6CP is up (the operator's view, not
	// only the gateway's).
	waitFor(t, "IPV6CP up in the bridge's status", func() bool {
		return strings.Contains(status().Uplink, " ipv6cp=up link_local6=fe80::")
	})
	// The gateway's session: outer over IPv6, the site's IPv6 prefix
	// routed to it (IPV6CP; IPv6 sent before it opened is retransmitted
	// by CoAP and TCP below).
	waitFor(t, "gateway session over IPv6 with the site's IPv6 prefix", func() bool {
		for _, s := range gw.Report().Sessions {
			if s.IPv6Prefix == "2001:db8:8::/64" && strings.HasPrefix(s.Outer, "[::1]:") {
				return true
			}
		}
		return false
	})

	// The DTLS listener is on [::] (both families); coaptest's device
	// socket is IPv4.
	d, err := coaptest.Dial(t, fmt.Sprintf("127.0.0.1:%d", a.CoAP.(*net.UDPAddr).Port), coaptest.Options{Identity: "sensor-17", Key: prov.Endpoint.PSK,
		Handler: func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
			p, _ := r.Path()
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("device"+p)))
		}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()
	resp, err := d.Conn.Post(pctx, "/data", message.TextPlain, bytes.NewReader([]byte("21.5")))
	if err != nil {
		t.Fatalf("device POST: %v", err)
	}
	body, _ := resp.ReadBody()
	if want := "src=[2001:db8:8::17]:"; resp.Code() != codes.Content || !strings.HasPrefix(string(body), want) {
		t.Fatalf("device → central over IPv6: got %v %q, want 2.05 %q…", resp.Code(), body, want)
	}
	t.Logf("device → central: %v %q", resp.Code(), body)

	c, err := central.DialUDP(netip.MustParseAddrPort("[2001:db8:200::10]:0"), netip.MustParseAddrPort("[2001:db8:8::17]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if code, body := coapGet(t, c, "/temp"); code != codes.Content || body != "device/temp" {
		t.Fatalf("central → [2001:db8:8::17]:5683: got %v %q, want 2.05 device/temp", code, body)
	}

	opts := paho.NewClientOptions().AddBroker("tcp://" + a.MQTTPlain.String()).SetClientID("pump-4").
		SetUsername(mprov.Endpoint.PSKIdentity).SetPassword(string(mprov.Endpoint.PSK))
	dev := paho.NewClient(opts)
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT device connect over [::1]: %v", tok.Error())
	}
	t.Cleanup(func() { dev.Disconnect(100) })
	if tok := dev.Publish("telemetry/flow", 1, false, "7.5"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT device publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p.topic != "sites/plant-a/pump-4/telemetry/flow" || p.payload != "7.5" || !strings.HasPrefix(p.remote, "[2001:db8:8::4]:") {
			t.Fatalf("central broker: got %+v, want sites/plant-a/pump-4/telemetry/flow 7.5 from [2001:db8:8::4]", p)
		}
		t.Logf("central broker: %+v", p)
	case <-time.After(30 * time.Second):
		t.Fatal("central broker: no publish within 30s")
	}
	for _, e := range status().Endpoints {
		if e.Name == "sensor-17" && e.Addr6 != "2001:db8:8::17" {
			t.Errorf("status: sensor-17 addr6 %q, want 2001:db8:8::17", e.Addr6)
		}
	}
}
