package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// siteNet is what the IPv4 and the IPv6 loopback sites differ in.
type siteNet struct {
	central    string // central's address as a host ("10.20.0.1", "[2001:db8:200::10]")
	coapListen string // the DTLS listener's host
	mqttListen string // the site broker's listeners' host
	extra      string // top-level YAML lines added to the bridge config
}

var site4 = siteNet{central: "10.20.0.1", coapListen: "127.0.0.1", mqttListen: "127.0.0.1"}

// siteConfig is the bridge configuration of site plant-a dialling the
// gateway ts (PSK, PPP plant-a/pw-a, AES-GCM ESP, fast backoff).
func siteConfig(t *testing.T, ts *l2tpipsec.Server, n siteNet) *bconfig.Config {
	t.Helper()
	y := fmt.Sprintf(`site: plant-a
prefix: 10.10.8.0/24
%sbridge_address: 10.10.8.1
state_dir: %s
downlink: {coap_listen: "%s:0", queue_ttl: 30s}
central_coap: "%s:5683"
http_listen: "127.0.0.1:0"
mqtt: {enabled: true, tls_listen: "%s:0", plain_listen: "%s:0", central: "%s:1883"}
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
`, n.extra, t.TempDir(), n.coapListen, n.central, n.mqttListen, n.mqttListen, n.central,
		ts.IKEAddr().String(), ts.NATTAddr().Port(), gwPSK)
	cfg, err := bconfig.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// provisionSite provisions sensor-17 (CoAP, PSK) and pump-4 (MQTT) in
// cfg's endpoint registry.
func provisionSite(t *testing.T, cfg *bconfig.Config) (coapEP, mqttEP *registry.Provisioned) {
	t.Helper()
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if coapEP, err = registry.Provision(reg, ca, registry.Request{Name: "sensor-17"}); err != nil {
		t.Fatal(err)
	}
	if mqttEP, err = registry.Provision(reg, ca, registry.Request{Name: "pump-4", Protocol: registry.MQTT}); err != nil {
		t.Fatal(err)
	}
	return coapEP, mqttEP
}

// runBridge runs the bridge daemon on cfg until stop (also at the test's
// end) and returns its listeners' addresses and a /status reader.
func runBridge(t *testing.T, cfg *bconfig.Config, o daemon.Options) (a daemon.Addrs, status func() daemon.Status, stop func()) {
	t.Helper()
	ready := make(chan daemon.Addrs, 1)
	o.Ready = func(a daemon.Addrs) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- daemon.RunWith(ctx, cfg, log, o) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("bridge Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("bridge stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("bridge not ready after 10s")
	}
	status = func() daemon.Status {
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
	return a, status, stop
}

// echoDevice is sensor-17 on the site LAN: a PSK DTLS device at the
// bridge's listener addr answering every GET with "device<path>".
func echoDevice(t *testing.T, addr string, ep *registry.Provisioned) *coaptest.Device {
	t.Helper()
	d, err := coaptest.Dial(t, addr, coaptest.Options{Identity: ep.Endpoint.PSKIdentity, Key: ep.Endpoint.PSK,
		Handler: func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
			p, _ := r.Path()
			_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("device"+p)))
		}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// postFrom POSTs body to /data from device d and checks that central
// (coaptest.SourceEcho) saw it from wantSrc, the endpoint's address.
func postFrom(t *testing.T, d *coaptest.Device, body, wantSrc string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := d.Conn.Post(ctx, "/data", message.TextPlain, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatalf("device POST: %v", err)
	}
	got, _ := resp.ReadBody()
	if want := "src=" + wantSrc + ":"; resp.Code() != codes.Content || !strings.HasPrefix(string(got), want) {
		t.Fatalf("device → central: got %v %q, want 2.05 %q…", resp.Code(), got, want)
	}
	t.Logf("device → central: %v %q", resp.Code(), got)
}

// mqttTelemetry connects pump-4 to the site broker at broker, publishes
// telemetry/flow 7.5, and checks that the central broker got it on the
// site's topic from wantRemote (the endpoint's address, as a host).
func mqttTelemetry(t *testing.T, broker string, ep *registry.Provisioned, got chan centralPublish, wantRemote string) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(ep.Endpoint.Name).
		SetUsername(ep.Endpoint.PSKIdentity).SetPassword(string(ep.Endpoint.PSK))
	dev := paho.NewClient(opts)
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT device connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { dev.Disconnect(100) })
	if tok := dev.Publish("telemetry/flow", 1, false, "7.5"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT device publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p.topic != "sites/plant-a/pump-4/telemetry/flow" || p.payload != "7.5" || !strings.HasPrefix(p.remote, wantRemote+":") {
			t.Fatalf("central broker: got %+v, want sites/plant-a/pump-4/telemetry/flow 7.5 from %s", p, wantRemote)
		}
		t.Logf("central broker: %+v", p)
	case <-time.After(30 * time.Second):
		t.Fatal("central broker: no publish within 30s")
	}
}
