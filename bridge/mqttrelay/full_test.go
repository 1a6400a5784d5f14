package mqttrelay

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSpoolBoundReached: with the WAN down the spool fills up; QoS 0 is
// dropped oldest-first, then a QoS 1 publish is refused (MQTT 5: PUBACK
// "quota exceeded"), metrics say so; when the WAN is back the queue drains
// and devices are accepted again: the bridge kept running.
func TestSpoolBoundReached(t *testing.T) {
	central := startMosquitto(t)
	wan := newGate(t, central.addr)
	wan.setOpen(false)
	port := freePort(t)
	cfg := siteConfig{
		spoolDir: t.TempDir(), central: wan.addr(), plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		spoolMax: 8 << 10, passwords: map[string]string{"sensor-1": "p"},
	}
	st := startSite(t, cfg)
	pub := func(qos, msg string) (string, error) {
		return runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-V", "mqttv5",
			"-u", "sensor-1", "-P", "p", "-i", "sensor-1", "-t", "telemetry/x", "-q", qos, "-m", msg)
	}
	kb := strings.Repeat("x", 1000)
	for i := 0; i < 3; i++ {
		if out, err := pub("0", kb); err != nil {
			t.Fatalf("qos 0: %v %s", err, out)
		}
	}
	var refused string
	accepted := 0
	for i := 0; i < 12 && refused == ""; i++ {
		out, err := pub("1", kb)
		if err != nil || strings.Contains(strings.ToLower(out), "quota") {
			refused = out
			break
		}
		accepted++
	}
	if !strings.Contains(strings.ToLower(refused), "quota exceeded") {
		t.Fatalf("QoS 1 beyond the bound: want 'quota exceeded', got %q (accepted %d)", refused, accepted)
	}
	sps := st.sp.Stats()
	t.Logf("bound %d bytes: accepted %d QoS 1 messages; spool bytes %d, dropped QoS 0 %d, refused %d; broker upstream refused %d",
		8<<10, accepted, sps.Bytes.Load(), sps.DroppedOverflow.Load(), sps.RefusedFull.Load(), st.broker.Stats().UpstreamRefused.Load())
	if sps.DroppedOverflow.Load() != 3 {
		t.Errorf("DroppedOverflow: got %d, want 3 (every QoS 0 went before a QoS 1 was refused)", sps.DroppedOverflow.Load())
	}
	if sps.RefusedFull.Load() == 0 || st.broker.Stats().UpstreamRefused.Load() == 0 || st.relay.Stats().SpoolRefused.Load() == 0 {
		t.Errorf("refusal not counted: spool %d, broker %d, relay %d", sps.RefusedFull.Load(), st.broker.Stats().UpstreamRefused.Load(), st.relay.Stats().SpoolRefused.Load())
	}
	if sps.Bytes.Load() > 8<<10 {
		t.Errorf("spool bytes %d over the bound", sps.Bytes.Load())
	}
	wan.setOpen(true)
	waitFor(t, 30*time.Second, "spool drained", func() bool { return sps.Queued.Load() == 0 })
	if out, err := pub("1", "after"); err != nil || strings.Contains(strings.ToLower(out), "quota") {
		t.Fatalf("publish after drain: %v %q", err, out)
	}
}
