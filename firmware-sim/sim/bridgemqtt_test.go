package sim

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"

	dlmqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
)

// upstreamFunc adapts a function to downlink/mqtt's Upstream.
type upstreamFunc func(endpoint string, m dlmqtt.Message) error

func (f upstreamFunc) Publish(endpoint string, m dlmqtt.Message) error { return f(endpoint, m) }

// TestAgainstBridgeMQTT runs password and certificate MQTT devices against
// the bridge's embedded broker (downlink/mqtt): its device ACL must accept
// the simulator's topic, and its Upstream hands every message to the
// collector before the PUBACK.
func TestAgainstBridgeMQTT(t *testing.T) {
	sc, err := scenario.Parse(strings.NewReader(`
name: bridge-mqtt
duration: 2s
target: {mqtt: "127.0.0.1:1", server_name: bridge.local}
groups:
  - {name: pw, count: 2, protocol: mqtt, format: json, interval: 200ms}
  - {name: cert, count: 2, protocol: mqtt, auth: cert, format: cbor, interval: 200ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	auth := dlmqtt.StaticAuth{Passwords: map[string]string{}, CertEndpoints: map[string]bool{}}
	for _, n := range f.Creds().Names() {
		e, _ := f.Creds().Get(n)
		if e.Cert != nil {
			auth.CertEndpoints[n] = true
		} else {
			auth.Passwords[e.Identity] = string(e.Secret)
		}
	}
	srvCert, err := f.CA().Issue("bridge.local", "bridge.local")
	if err != nil {
		t.Fatal(err)
	}
	col := collector.New(collector.Config{})
	var mu sync.Mutex
	topics := map[string]string{}
	b, err := dlmqtt.New(dlmqtt.Config{
		TLSAddr: "127.0.0.1:0",
		TLS: &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientCAs: f.CA().Pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12},
		Auth: auth,
		Upstream: upstreamFunc(func(ep string, m dlmqtt.Message) error {
			mu.Lock()
			topics[ep] = m.Topic
			mu.Unlock()
			_, err := col.Handle("mqtt", ep, append([]byte(nil), m.Payload...), collector.DetectFormat(m.Payload))
			return err
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f, err = NewFleet(sc, Options{Creds: f.Creds(), CA: f.CA(), Collector: col, MQTTTarget: b.TLSAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Handshakes != 1 || d.Collected.Unique != d.Acked || d.Collected.Gaps != 0 {
			t.Errorf("%s (%s): acked %d unacked %d handshakes %d collected %+v; errors %v", d.Name, d.Group, d.Acked, d.Unacked, d.Handshakes, d.Collected, rep.Errors)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for ep, topic := range topics {
		if topic != "telemetry/senml" {
			t.Errorf("%s published on %q, want telemetry/senml", ep, topic)
		}
	}
}
