package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	dlmqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
)

// TestMQTTCommands: MQTT devices subscribe to cmd/# through the bridge's
// broker (downlink/mqtt, whose subscribe ACL is cmd/#); a command handed
// to the broker's Deliver (what the relay does for central commands) is
// received once by exactly the addressed device, answered on
// status/cmd/..., and counted in the JSON report.
func TestMQTTCommands(t *testing.T) {
	sc, err := scenario.Parse(strings.NewReader(`
name: commands
target: {mqtt: "127.0.0.1:1", server_name: bridge.local}
groups:
  - {name: pw, count: 2, protocol: mqtt, format: json, interval: 200ms}
  - {name: cert, count: 1, protocol: mqtt, auth: cert, format: cbor, interval: 200ms}
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
	type reply struct{ ep, topic string }
	replies := make(chan reply, 16)
	var mu sync.Mutex
	payloads := map[string][]byte{}
	b, err := dlmqtt.New(dlmqtt.Config{
		TLSAddr: "127.0.0.1:0",
		TLS: &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientCAs: f.CA().Pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12},
		Auth: auth,
		Upstream: upstreamFunc(func(ep string, m dlmqtt.Message) error {
			if strings.HasPrefix(m.Topic, "status/") {
				mu.Lock()
				payloads[ep] = append([]byte(nil), m.Payload...)
				mu.Unlock()
				replies <- reply{ep, m.Topic}
				return nil
			}
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
	f, err = NewFleet(sc, Options{Creds: f.Creds(), CA: f.CA(), Collector: col, MQTTTarget: b.TLSAddr().String(), Drain: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	for len(col.Names()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("devices seen by the collector: %v, want 3", col.Names())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Telemetry arrived, so each device's subscription (made before its
	// first publish) is in place. One command each to sensor-1 and
	// sensor-3; sensor-2 gets none.
	for _, ep := range []string{"sensor-1", "sensor-3"} {
		if err := b.Deliver(ep, "cmd/ping", []byte("ping-"+ep), 1, false); err != nil {
			t.Fatalf("deliver to %s: %v", ep, err)
		}
	}
	got := map[string]string{}
	for len(got) < 2 {
		select {
		case r := <-replies:
			if _, dup := got[r.ep]; dup {
				t.Fatalf("second reply from %s", r.ep)
			}
			got[r.ep] = r.topic
		case <-time.After(15 * time.Second):
			t.Fatalf("replies: got %v, want sensor-1 and sensor-3", got)
		}
	}
	for ep, topic := range got {
		if topic != "status/cmd/ping" {
			t.Errorf("%s replied on %q, want status/cmd/ping", ep, topic)
		}
		var r device.CommandReply
		mu.Lock()
		err := json.Unmarshal(payloads[ep], &r)
		mu.Unlock()
		if err != nil || r.Device != ep || r.Command != "cmd/ping" || r.Payload != "ping-"+ep || r.N != 1 {
			t.Errorf("%s reply: %+v (%v)", ep, r, err)
		}
	}
	// The reply's PUBACK is counted just after the broker took it.
	want := map[string]uint64{"sensor-1": 1, "sensor-2": 0, "sensor-3": 1}
	deadline = time.Now().Add(10 * time.Second)
	for {
		rep := f.Report()
		ok := rep.Totals.CommandReplies == 2
		for _, d := range rep.PerDevice {
			ok = ok && d.Commands == want[d.Name] && d.CommandReplies == want[d.Name]
		}
		if ok {
			var buf bytes.Buffer
			if err := rep.WriteJSON(&buf); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), `"commands_received": 2`) || !strings.Contains(buf.String(), `"command_replies": 2`) {
				t.Fatalf("JSON report totals lack commands_received/command_replies 2:\n%s", buf.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("report: totals %+v per device %+v, want commands %v", rep.Totals, rep.PerDevice, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
