package sim

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestDemoFleet runs the shipped 50-device demo scenario for 12 s against
// an in-process DTLS collector (PSK + certificates, CID) and an in-process
// TLS broker, and checks that the collector got telemetry from every
// device — what the demo itself must show.
func TestDemoFleet(t *testing.T) {
	testenv.SkipIfShort(t, "12 s fleet run")
	_, file, _, _ := runtime.Caller(0)
	sc, err := scenario.Load(filepath.Join(filepath.Dir(file), "..", "..", "configs", "fleet-demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration = 12 * time.Second
	col := collector.New(collector.Config{})
	f, err := NewFleet(sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	coapAddr := startDTLSCollector(t, f, col)

	srvCert, err := f.CA().Issue("bridge.local", "bridge.local")
	if err != nil {
		t.Fatal(err)
	}
	port := realpeer.FreePort(t)
	b := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	_ = b.AddHook(new(auth.AllowHook), nil)
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: fmt.Sprintf("127.0.0.1:%d", port),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{*srvCert}, MinVersion: tls.VersionTLS12}})); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := col.SubscribeMQTT(ctx, collector.MQTTConfig{Topic: "telemetry/#", Broker: fmt.Sprintf("tls://127.0.0.1:%d", port),
		TLS: &tls.Config{RootCAs: f.CA().Pool, ServerName: "bridge.local", MinVersion: tls.VersionTLS12}}); err != nil {
		t.Fatal(err)
	}
	f, err = NewFleet(sc, Options{Creds: f.Creds(), CA: f.CA(), Collector: col, CoAPTarget: coapAddr,
		MQTTTarget: fmt.Sprintf("127.0.0.1:%d", port), AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Devices != 50 || rep.Reporting != 50 {
		t.Errorf("devices: got %d reporting of %d, want 50 of 50", rep.Reporting, rep.Devices)
	}
	for _, d := range rep.PerDevice {
		if d.Collected == nil || d.Collected.Unique == 0 {
			t.Errorf("%s (%s): no telemetry reached the collector (sent %d, errors %v)", d.Name, d.Group, d.Sent, rep.Errors)
		}
	}
	tot := rep.Totals
	t.Logf("demo fleet 12s: sent %d acked %d collector unique %d lost %d handshakes %d (failed %d) rebinds %d reconnects %d drops %d/%d p50 %.2fms p99 %.2fms",
		tot.Sent, tot.Acked, rep.Collected.Unique, rep.Lost, tot.Handshakes, tot.HandshakeFailures, tot.Rebinds, tot.Reconnects,
		tot.DroppedOut, tot.DroppedIn, tot.Latency.P50Ms, tot.Latency.P99Ms)
}
