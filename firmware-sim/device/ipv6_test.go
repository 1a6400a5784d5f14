package device

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// A simulated sensor dials a bridge at an IPv6 address on the site LAN
// (here [::1]): DTLS handshake, confirmable telemetry acknowledged, no
// gaps or duplicates at the collector.
func TestCoAPDeviceIPv6Target(t *testing.T) {
	stacktest.CheckGoroutines(t)
	name := "sensor-v6"
	set, err := creds.Generate("seed", creds.KindPSK, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := set.Get(name)
	l, err := collector.ListenDTLS(collector.DTLSConfig{Addr: "[::1]:0", Creds: set})
	if err != nil {
		t.Fatal(err)
	}
	if ap := netip.MustParseAddrPort(l.Addr().String()); !ap.Addr().Is6() {
		t.Fatalf("collector on %s, want IPv6", ap)
	}
	col := collector.New(collector.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = col.ServeCoAPDTLS(ctx, l) }()
	t.Cleanup(func() { cancel(); _ = l.Close(); <-done })
	d := runDevice(t, Config{
		Name: name, Protocol: CoAP, Target: l.Addr().String(), Path: "/telemetry", Creds: e,
		Suite: "ccm8", Format: senml.FormatCBOR, Interval: 50 * time.Millisecond,
		Confirmable: true, AckTimeout: 200 * time.Millisecond,
	})
	waitFor(t, "3 acked messages over IPv6", func() bool { return d.Stats.Acked.Load() >= 3 })
	got, _ := col.Device(name)
	if got.Unique < 3 || got.Gaps != 0 || got.Duplicates != 0 {
		t.Errorf("collector: got %+v, want >= 3 unique, no gaps or duplicates", got)
	}
}
