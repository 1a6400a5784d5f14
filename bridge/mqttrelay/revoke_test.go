package mqttrelay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/mqtt"
)

// TestRemoveEndpoint: with the central broker unreachable, a revoked
// endpoint's queued messages are dropped at once (drain 0) and its session
// is gone when RemoveEndpoint returns; with a drain and the central broker
// back, what was queued is delivered first. Another endpoint is untouched.
func TestRemoveEndpoint(t *testing.T) {
	central := startMosquitto(t)
	g := newGate(t, central.addr)
	g.setOpen(false)
	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	r, err := New(Config{Site: "s1", Server: netip.MustParseAddrPort(g.addr()), AddrOf: addrOf, Spool: sp,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	for _, ep := range []string{"sensor-1", "sensor-2"} {
		for i := 0; i < 3; i++ {
			if err := r.Publish(ep, mqtt.Message{Topic: "telemetry/t", Payload: []byte{byte('0' + i)}, QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := r.RemoveEndpoint("sensor-1", 0)
	if err != nil || n != 3 {
		t.Fatalf("RemoveEndpoint(drop): %d, %v; want 3 dropped", n, err)
	}
	for _, st := range r.Status() {
		if st.Endpoint == "sensor-1" {
			t.Fatalf("sensor-1's session survived: %+v", st)
		}
	}
	if q, _, _ := sp.Depth("sensor-2"); q != 3 || r.Stats().Revoked.Load() != 1 {
		t.Fatalf("sensor-2 queue %d (want 3), Revoked %d", q, r.Stats().Revoked.Load())
	}
	// Drain: the central broker comes back while sensor-2 is revoked.
	g.setOpen(true)
	n, err = r.RemoveEndpoint("sensor-2", 20*time.Second)
	if err != nil || n != 0 {
		t.Fatalf("RemoveEndpoint(drain): %d dropped, %v; want everything delivered first", n, err)
	}
	if got := r.Stats().Acked.Load(); got != 3 {
		t.Fatalf("acked %d, want sensor-2's 3", got)
	}
}
