package mqttrelay

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestSpoolBoundReached: with the WAN down the spool fills up; QoS 0 is
// dropped oldest-first, then a QoS 1 publish is refused (MQTT 5: PUBACK
// "quota exceeded"), metrics say so; when the WAN is back the queue drains
// and devices are accepted again: the bridge kept running.
func TestSpoolBoundReached(t *testing.T) {
	central := startMosquitto(t)
	wan := newGate(t, central.addr)
	wan.setOpen(false)
	port := realpeer.FreePort(t)
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

// TestMetrics: the metrics walk reports the endpoint's queue and session
// state (checked on a WAN-down site).
func TestMetrics(t *testing.T) {
	central := startMosquitto(t)
	wan := newGate(t, central.addr)
	wan.setOpen(false)
	port := realpeer.FreePort(t)
	st := startSite(t, siteConfig{spoolDir: t.TempDir(), central: wan.addr(),
		plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), spoolMax: 1 << 20, passwords: map[string]string{"sensor-1": "p"}})
	for i := 0; i < 3; i++ {
		if err := st.relay.Publish("sensor-1", mqtt.Message{Topic: "telemetry/x", QoS: 1, Payload: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]float64{}
	st.relay.Metrics(st.broker, func(s Sample) {
		key := s.Name
		for i := 0; i+1 < len(s.Labels); i += 2 {
			key += "," + s.Labels[i] + "=" + s.Labels[i+1]
		}
		if _, dup := got[key]; dup {
			t.Errorf("duplicate sample %s", key)
		}
		got[key] = s.Value
	})
	for key, want := range map[string]float64{
		"spool_messages": 3,
		"mqttrelay_endpoint_queued_messages,endpoint=sensor-1": 3,
		"mqttrelay_events_total,event=spooled":                 3,
		"spool_messages_dropped_total,reason=refused_full":     0,
		"mqtt_events_total,event=connect":                      0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s: got %v (present %v), want %v", key, v, ok, want)
		}
	}
	stateKey := ""
	for k := range got {
		if strings.HasPrefix(k, "mqttrelay_endpoint_state,endpoint=sensor-1,source=127.0.0.11,") {
			stateKey = k
		}
	}
	if stateKey == "" || strings.HasSuffix(stateKey, "state=connected") {
		t.Errorf("endpoint state with the WAN down: got %q", stateKey)
	}
}
