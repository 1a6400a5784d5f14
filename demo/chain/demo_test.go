package chain

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// testScenario is a small mixed fleet for CI time.
const testScenario = `
name: demo-test
seed: 7
target: {coap: "127.0.0.1:1", coap_path: /telemetry, mqtt: "127.0.0.1:1", mqtt_topic: telemetry/senml, server_name: bridge.hall7}
credentials: {seed: fleetgate-demo-test}
groups:
  - {name: ccm8-cid, count: 4, protocol: coap, auth: psk, suite: ccm8, cid: true, format: cbor, interval: 2s}
  - {name: gcm, count: 3, protocol: coap, auth: psk, suite: gcm, format: json, interval: 2s}
  - {name: cert, count: 2, protocol: coap, auth: cert, suite: ccm8, cid: true, format: cbor, interval: 2s}
%s`

// TestDemo runs the whole chain (gateway, real uplink, bridge, fleet) and
// asserts the demo's success conditions with the real numbers.
func TestDemo(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sc := strings.Replace(testScenario, "%s", "  - {name: mqtt, count: 4, protocol: mqtt, format: json, interval: 2s}\n", 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := Run(ctx, Options{Duration: 15 * time.Second, Scenario: []byte(sc), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Endpoints) != 13 {
		t.Errorf("got %d endpoints, want 13", len(v.Endpoints))
	}
	for _, e := range v.Endpoints {
		if e.Messages == 0 || !e.FromOwnAddr || !strings.HasPrefix(e.Addr, "10.10.8.") {
			t.Errorf("%s (%s, %s): %d messages at central, last from %q", e.Name, e.Protocol, e.Addr, e.Messages, e.From)
		}
	}
	if ph := strings.Join(v.Uplink, "\n"); !strings.Contains(ph, "connecting attempt 1 to 127.0.0.1:") || !strings.Contains(ph, " up addr 10.10.0.") || !strings.Contains(ph, "ESP aes") {
		t.Errorf("uplink phases: got %q, want connecting attempt 1, then up with a pool address and the ESP suite", v.Uplink)
	}
	if !v.RoundTrip.OK {
		t.Errorf("round trip to %s failed: %s", v.RoundTrip.Target, v.RoundTrip.Result)
	}
	if !v.Command.OK || !strings.HasPrefix(v.Command.Target, "sensor-10 (10.10.8.10)") || v.Command.From != "10.10.8.10" {
		t.Errorf("MQTT command: got %+v, want a reply from sensor-10 at 10.10.8.10", v.Command)
	}
	if !v.Success {
		t.Errorf("demo failed: %v", v.Failures)
	}
	t.Logf("uplink: %v", v.Uplink)
	t.Logf("round trip: %+v; MQTT command: %+v; %d/%d endpoints reporting", v.RoundTrip, v.Command, v.Reporting, len(v.Endpoints))
}

// TestDemoIPv6 is the chain with Options.IPv6 (`go run ./demo --ipv6`):
// uplink over ::1 only, IPV6CP, every endpoint's telemetry at central from
// its IPv6 address, the central → device round trip to an IPv6 endpoint
// address and the MQTT command answered from one.
func TestDemoIPv6(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sc := strings.Replace(testScenario, "%s", "  - {name: mqtt, count: 2, protocol: mqtt, format: json, interval: 2s}\n", 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := Run(ctx, Options{Duration: 12 * time.Second, Scenario: []byte(sc), StateDir: t.TempDir(), IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Endpoints {
		if e.Messages == 0 || !e.FromOwnAddr || !strings.HasPrefix(e.Addr, "2001:db8:8::") {
			t.Errorf("%s (%s, %s): %d messages at central, last from %q", e.Name, e.Protocol, e.Addr, e.Messages, e.From)
		}
	}
	if ph := strings.Join(v.Uplink, "\n"); !strings.Contains(ph, "connecting attempt 1 to [::1]:") {
		t.Errorf("uplink phases: got %q, want an attempt over [::1]", v.Uplink)
	}
	if !v.RoundTrip.OK || !strings.Contains(v.RoundTrip.Target, "(2001:db8:8::") {
		t.Errorf("round trip: got %+v, want OK to an IPv6 endpoint address", v.RoundTrip)
	}
	if !v.Command.OK || !strings.HasPrefix(v.Command.From, "2001:db8:8::") {
		t.Errorf("MQTT command: got %+v, want a reply from an IPv6 endpoint address", v.Command)
	}
	if !v.Success {
		t.Errorf("demo failed: %v", v.Failures)
	}
}
