package e2e

// Issue 17, device side, with the real daemons: removing an MQTT endpoint
// cuts its device off at once and for good (also once its address is given
// to a new endpoint), and a replaced device certificate no longer logs in.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// reload sends the bridge SIGHUP and waits until it logged the reload
// that followed; it returns when the signal was sent.
func (e *Env) reload() time.Time {
	e.T.Helper()
	p := e.BridgeProc()
	n := strings.Count(e.Log("bridge", 1), `"msg":"endpoints reloaded"`)
	sent := time.Now()
	_ = syscall.Kill(p.PID, syscall.SIGHUP)
	e.waitFor("reload after SIGHUP", 30*time.Second, p, func() bool {
		return strings.Count(e.Log("bridge", 1), `"msg":"endpoints reloaded"`) > n
	})
	return sent
}

// logTime returns the time of the first bridge log line with msg whose
// text contains all of with.
func (e *Env) logTime(msg string, with ...string) (time.Time, bool) {
	for _, l := range strings.Split(e.Log("bridge", 1), "\n") {
		if !strings.Contains(l, `"msg":"`+msg+`"`) {
			continue
		}
		ok := true
		for _, w := range with {
			ok = ok && strings.Contains(l, w)
		}
		var x struct {
			Time time.Time `json:"time"`
		}
		if ok && json.Unmarshal([]byte(l), &x) == nil {
			return x.Time, true
		}
	}
	return time.Time{}, false
}

func countPayloads(msgs []string, marker string) int {
	n := 0
	for _, m := range msgs {
		if strings.Contains(m, marker) {
			n++
		}
	}
	return n
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestMqttRevocation: (1) `endpoint remove sensor-4` + SIGHUP disconnects
// the device, which keeps publishing QoS 1 every 100 ms on one connection,
// within 1 s of the signal (bridge log time), deletes its session, stops
// its relay session and drops its spool; nothing it sends reaches the
// central broker afterwards. (2) Its address 10.10.8.4 goes to a new
// endpoint probe-4, whose traffic arrives from it; the old device's
// credentials are refused and none of its messages reach central under any
// topic, and central sees no new sensor-4 client from any address.
// (3) sensor-5's certificate is replaced (remove + add --cert): the old
// certificate is refused (log "certificate refused", counter
// mqtt_events_total{event="cert_refused"}), the new one works.
func TestMqttRevocation(t *testing.T) {
	t.Parallel()
	m := setupMQTT(t, []string{"sensor-4", "sensor-6"}, "")
	s4, s6 := m.Endpoint("sensor-4"), m.Endpoint("sensor-6")
	m.waitCentralSessions(t, []*Endpoint{s4, s6}, 30*time.Second)
	sub := m.central.Subscribe(t, m.Central, "#", "-q", "1")

	// (1) The device publishes old-0, old-1, ... on one connection.
	script := `i=0; while [ $i -lt 900 ]; do echo "old-$i"; i=$((i+1)); sleep 0.1; done | mosquitto_pub ` +
		shellQuote(m.deviceArgs(s4)) + ` -t telemetry/n -q 1 -l`
	old := netns.Start(t, m.Sensors.Command("sh", "-c", script))
	if !Poll(30*time.Second, func() bool { return countPayloads(sub.Messages(), "old-") >= 5 }) {
		t.Fatalf("central got no telemetry from sensor-4:\n%s", old.Output())
	}
	reusedConnects := func() int {
		return len(regexp.MustCompile(`New client connected from \S+ as plant-a/sensor-4 `).FindAllString(m.central.Proc.Output(), -1))
	}
	m.mustRun(nil, Bin(t, "bridge"), "-c", m.BridgeConfig, "endpoint", "remove", "sensor-4")
	sighup := m.reload()
	cut, ok := m.logTime("mqtt device disconnected", `"endpoint":"sensor-4"`)
	if !ok {
		t.Fatalf("bridge logged no disconnect of sensor-4:\n%s", tail(filepath.Join(m.Dir, "bridge-1.log"), 40))
	}
	if d := cut.Sub(sighup); d > time.Second {
		t.Fatalf("sensor-4 disconnected %v after SIGHUP, want <= 1 s", d)
	}
	if _, ok := m.logTime("mqttrelay: endpoint revoked: central session stopped, queued messages dropped", `"endpoint":"sensor-4"`); !ok {
		t.Fatal("bridge logged no relay revocation of sensor-4")
	}
	time.Sleep(500 * time.Millisecond) // what central had forwarded already
	n1, connects1 := countPayloads(sub.Messages(), "old-"), reusedConnects()
	time.Sleep(3 * time.Second) // the device keeps trying meanwhile
	if n2 := countPayloads(sub.Messages(), "old-"); n2 != n1 {
		t.Fatalf("central received %d more messages of the removed device after its removal", n2-n1)
	}
	// The relay's central session from 10.10.8.4 is gone before the
	// address can be reused (aborted with the address: no FIN later).
	if !regexp.MustCompile(`(Client plant-a/sensor-4 closed its connection|Client plant-a/sensor-4 disconnected|Socket error on client plant-a/sensor-4)`).MatchString(m.central.Proc.Output()) {
		t.Fatalf("central still has sensor-4's relay session after its removal:\n%s", m.central.Proc.Output())
	}
	for _, series := range []string{`endpoints_revoked_total`, `mqtt_events_total{event="revoked"}`} {
		if v := m.Metric(series); v < 1 {
			t.Fatalf("%s = %v, want >= 1", series, v)
		}
	}
	t.Logf("sensor-4 cut %v after SIGHUP; central got %d of its messages, all before the removal", cut.Sub(sighup).Round(time.Millisecond), n1)

	// (2) The freed address goes to probe-4.
	probe := m.AddEndpoint(EndpointSpec{Name: "probe-4", Protocol: "mqtt"})
	if probe.Addr != s4.Addr {
		t.Fatalf("probe-4 got %v, want the freed %v", probe.Addr, s4.Addr)
	}
	m.waitCentralSessions(t, []*Endpoint{probe}, 30*time.Second)
	ctx := m.Context(20 * time.Second)
	if out, err := m.Sensors.Run(ctx, "mosquitto_pub", append(m.deviceArgs(probe), "-t", "telemetry/n", "-m", "new-1", "-q", "1")...); err != nil {
		t.Fatalf("probe-4: %v\n%s", err, out)
	}
	out, err := m.Sensors.Run(ctx, "mosquitto_pub", append(m.deviceArgs(s4), "-t", "telemetry/n", "-m", "old-after-reuse", "-q", "1")...)
	if err == nil {
		t.Fatalf("the removed device's credentials still publish after address reuse: %s", out)
	}
	if !Poll(10*time.Second, func() bool { return countPayloads(sub.Messages(), "sites/plant-a/probe-4/telemetry/n new-1") == 1 }) {
		t.Fatalf("probe-4's message not at central: %q", sub.Messages())
	}
	time.Sleep(time.Second)
	if n3 := countPayloads(sub.Messages(), "old-"); n3 != n1 {
		t.Fatalf("central received %d messages of the removed device after its address was reused: %q", n3-n1, sub.Messages())
	}
	if c := reusedConnects(); c != connects1 {
		t.Fatalf("central saw %d new sensor-4 clients after the removal", c-connects1)
	}
	if _, ok := m.logTime("mqtt connect refused", `"client_id":"sensor-4"`); !ok {
		t.Fatal("bridge logged no refusal of the removed device")
	}
	old.Stop()

	// (3) A replaced certificate is refused.
	s5 := m.AddEndpoint(EndpointSpec{Name: "sensor-5", Protocol: "mqtt", Cert: true})
	oldCert, oldKey := filepath.Join(m.Dir, "sensor-5-old.crt"), filepath.Join(m.Dir, "sensor-5-old.key")
	for _, c := range [][2]string{{s5.CertFile, oldCert}, {s5.KeyFile, oldKey}} {
		b, err := os.ReadFile(c[0])
		if err != nil {
			t.Fatal(err)
		}
		m.write(c[1], string(b))
	}
	certPub := func(cert, key, msg string) (string, error) {
		args := []string{"-h", BridgeLAN.String(), "-p", fmt.Sprint(MQTTSPort), "--cafile", m.siteCA, "--cert", cert, "--key", key,
			"-i", "sensor-5", "-t", "telemetry/n", "-m", msg, "-q", "1"}
		return m.Sensors.Run(m.Context(20*time.Second), "mosquitto_pub", args...)
	}
	if out, err := certPub(oldCert, oldKey, "cert-old-1"); err != nil {
		t.Fatalf("sensor-5 with its certificate: %v\n%s", err, out)
	}
	m.mustRun(nil, Bin(t, "bridge"), "-c", m.BridgeConfig, "endpoint", "remove", "sensor-5")
	s5 = m.provision(EndpointSpec{Name: "sensor-5", Protocol: "mqtt", Cert: true})
	m.reload()
	if out, err := certPub(oldCert, oldKey, "cert-old-2"); err == nil {
		t.Fatalf("the replaced certificate still logs in: %s", out)
	}
	if _, ok := m.logTime("mqtt connect refused", "certificate refused", "replaced"); !ok {
		t.Fatalf("bridge logged no 'certificate refused ... replaced':\n%s", tail(filepath.Join(m.Dir, "bridge-1.log"), 30))
	}
	if v := m.Metric(`mqtt_events_total{event="cert_refused"}`); v < 1 {
		t.Fatalf(`mqtt_events_total{event="cert_refused"} = %v, want >= 1`, v)
	}
	if out, err := certPub(s5.CertFile, s5.KeyFile, "cert-new-1"); err != nil {
		t.Fatalf("sensor-5 with its new certificate: %v\n%s", err, out)
	}
	if !Poll(20*time.Second, func() bool { return countPayloads(sub.Messages(), "cert-new-1") == 1 }) {
		t.Fatalf("the new certificate's message did not reach central: %q", sub.Messages())
	}
	if n := countPayloads(sub.Messages(), "cert-old-2"); n != 0 {
		t.Fatalf("the replaced certificate's message reached central")
	}
}
