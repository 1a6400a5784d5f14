package sim

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestMQTTInProcessBroker runs password and certificate MQTT devices over
// TLS against an in-process mochi-mqtt broker (no Debian peer needed),
// with the collector subscribed, and a mixed CoAP group on the side.
func TestMQTTInProcessBroker(t *testing.T) {
	ca, err := creds.NewCA("mochi-ca")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.Issue("broker.test", "broker.test")
	if err != nil {
		t.Fatal(err)
	}
	port := realpeer.FreePort(t)
	b := mochi.New(&mochi.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientCAs: ca.Pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	var certCNs sync.Map
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			certCNs.Store(cs.PeerCertificates[0].Subject.CommonName, true)
		}
		return nil
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: fmt.Sprintf("127.0.0.1:%d", port), TLSConfig: tc})); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))

	col := collector.New(collector.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := col.SubscribeMQTT(ctx, collector.MQTTConfig{Topic: "telemetry/#",
		Broker: fmt.Sprintf("tls://127.0.0.1:%d", port),
		TLS:    &tls.Config{RootCAs: ca.Pool, ServerName: "broker.test", MinVersion: tls.VersionTLS12},
	}); err != nil {
		t.Fatal(err)
	}
	sc, err := scenario.Parse(strings.NewReader(fmt.Sprintf(`
name: mochi
duration: 2s
target: {mqtt: "127.0.0.1:%d", server_name: broker.test}
groups:
  - {name: pw, count: 2, protocol: mqtt, format: json, interval: 200ms}
  - {name: cert, count: 2, protocol: mqtt, auth: cert, format: cbor, interval: 200ms}
`, port)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(sc, Options{CA: ca, Collector: col})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for col.Total().Unique < rep.Totals.Acked && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rep = f.Report()
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Collected.Unique != d.Acked || d.Collected.Gaps != 0 {
			t.Errorf("%s (%s): acked %d unacked %d collected %+v; errors %v", d.Name, d.Group, d.Acked, d.Unacked, d.Collected, rep.Errors)
		}
	}
	for _, n := range []string{"sensor-3", "sensor-4"} {
		if _, ok := certCNs.Load(n); !ok {
			t.Errorf("%s did not authenticate with its certificate", n)
		}
	}
	if _, ok := certCNs.Load("sensor-1"); ok {
		t.Error("password device sensor-1 presented a certificate")
	}
	if got := len(col.Names()); got != 4 {
		t.Errorf("collector saw %d devices, want 4", got)
	}
}
