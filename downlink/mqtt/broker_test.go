package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// recorder is an Upstream that records what devices published.
type recorder struct {
	mu   sync.Mutex
	msgs []string // "endpoint|topic|payload|qos|retain|will"
	err  error
	got  chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 100)} }

func (r *recorder) Publish(ep string, m Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.msgs = append(r.msgs, fmt.Sprintf("%s|%s|%s|%d|%v|%v", ep, m.Topic, m.Payload, m.QoS, m.Retain, m.Will))
	select {
	case r.got <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

type testBroker struct {
	*Broker
	pki  *realpeer.TLSCA
	up   *recorder
	port string
}

func startBroker(t *testing.T, mod func(*Config)) *testBroker {
	t.Helper()
	pki := realpeer.NewTLSCA(t, "fleetgate test site CA")
	up := newRecorder()
	cfg := Config{
		TLSAddr:  "127.0.0.1:0",
		TLS:      pki.ServerTLS(t, "127.0.0.1", "localhost"),
		Auth:     StaticAuth{Passwords: map[string]string{"sensor-1": "pw1", "sensor-2": "pw2"}, CertEndpoints: map[string]bool{"sensor-3": true}},
		Upstream: up,
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	tb := &testBroker{Broker: b, pki: pki, up: up}
	if a := b.TLSAddr(); a != nil {
		_, tb.port, _ = net.SplitHostPort(a.String())
	}
	return tb
}

// mosq runs mosquitto_pub or mosquitto_sub against the broker's TLS port.
func (tb *testBroker) mosq(t *testing.T, prog string, args ...string) (string, error) {
	t.Helper()
	bin := testenv.RequireBinary(t, prog)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"-h", "127.0.0.1", "-p", tb.port, "--cafile", tb.pki.CAFile}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestMosquittoPublishTLS(t *testing.T) {
	tb := startBroker(t, nil)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, q := range []string{"0", "1", "2"} {
			out, err := tb.mosq(t, "mosquitto_pub", "-V", v, "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1",
				"-t", "telemetry/temp", "-m", v+"-q"+q, "-q", q)
			if err != nil {
				t.Fatalf("%s qos %s: mosquitto_pub: %v\n%s", v, q, err, out)
			}
		}
	}
	// Certificate login: CN sensor-3, no username.
	cf, kf := tb.pki.IssueFiles(t, "sensor-3")
	if out, err := tb.mosq(t, "mosquitto_pub", "--cert", cf, "--key", kf, "-i", "sensor-3",
		"-t", "status/online", "-m", "yes", "-q", "1", "-r"); err != nil {
		t.Fatalf("cert login: %v\n%s", err, out)
	}
	want := []string{
		"sensor-1|telemetry/temp|mqttv311-q0|0|false|false",
		"sensor-1|telemetry/temp|mqttv311-q1|1|false|false",
		"sensor-1|telemetry/temp|mqttv311-q2|2|false|false",
		"sensor-1|telemetry/temp|mqttv5-q0|0|false|false",
		"sensor-1|telemetry/temp|mqttv5-q1|1|false|false",
		"sensor-1|telemetry/temp|mqttv5-q2|2|false|false",
		"sensor-3|status/online|yes|1|true|false",
	}
	if got := tb.up.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("upstream got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := tb.Stats().Connects.Load(); got != 7 {
		t.Errorf("Connects: got %d, want 7", got)
	}
}

func TestMosquittoBadCredentials(t *testing.T) {
	tb := startBroker(t, nil)
	other, otherKey := realpeer.NewTLSCA(t, "other site CA").IssueFiles(t, "sensor-3") // right CN, wrong CA
	cases := []struct {
		name string
		args []string
	}{
		{"wrong password", []string{"-u", "sensor-1", "-P", "nope", "-i", "sensor-1"}},
		{"unknown user", []string{"-u", "sensor-9", "-P", "pw1", "-i", "sensor-9"}},
		{"client id of another endpoint", []string{"-u", "sensor-1", "-P", "pw1", "-i", "sensor-2"}},
		{"no credentials", []string{"-i", "sensor-1"}},
		{"certificate from another CA", []string{"--cert", other, "--key", otherKey, "-i", "sensor-3"}},
		{"will topic outside mapping", []string{"-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "--will-topic", "cmd/x", "--will-payload", "bye"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string(nil), c.args...), "-t", "telemetry/x", "-m", "m", "-q", "1")
			out, err := tb.mosq(t, "mosquitto_pub", args...)
			if err == nil {
				t.Fatalf("mosquitto_pub succeeded, want refusal:\n%s", out)
			}
		})
	}
	if got := len(tb.up.all()); got != 0 {
		t.Fatalf("upstream got %d messages from refused clients", got)
	}
	// The foreign-CA certificate fails in the TLS handshake, before MQTT.
	if got := tb.Stats().AuthFailures.Load(); got != uint64(len(cases)-1) {
		t.Errorf("AuthFailures: got %d, want %d", got, len(cases)-1)
	}
}

func TestTopicInjectionRefused(t *testing.T) {
	tb := startBroker(t, nil)
	// MQTT 5 QoS 1 publish outside the mapping: PUBACK "not authorized".
	out, err := tb.mosq(t, "mosquitto_pub", "-V", "mqttv5", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "cmd/x", "-m", "evil", "-q", "1")
	if !strings.Contains(out, "Not authorized") {
		t.Errorf("v5 publish outside mapping: want 'Not authorized', got err=%v out=%q", err, out)
	}
	// MQTT 3.1.1: the broker disconnects the client.
	_, _ = tb.mosq(t, "mosquitto_pub", "-V", "mqttv311", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "ep/sensor-2/cmd/x", "-m", "evil", "-q", "1")
	_, _ = tb.mosq(t, "mosquitto_pub", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "$SYS/x", "-m", "evil", "-q", "0")
	// Subscriptions outside the mapping are refused in the SUBACK.
	for _, f := range []string{"#", "+/cmd/#", "telemetry/#"} {
		out, _ := tb.mosq(t, "mosquitto_sub", "-V", "mqttv5", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", f, "-C", "1", "-W", "2", "-E")
		if !strings.Contains(strings.ToLower(out), "not authorized") && !strings.Contains(strings.ToLower(out), "denied") {
			t.Errorf("subscribe %q: want a refusal, got %q", f, out)
		}
	}
	if got := len(tb.up.all()); got != 0 {
		t.Fatalf("upstream got injected messages: %v", tb.up.all())
	}
	if got := tb.Stats().TopicDenied.Load(); got < 5 {
		t.Errorf("TopicDenied: got %d, want >= 5", got)
	}
}

func TestOversizedPayloadRefused(t *testing.T) {
	tb := startBroker(t, func(c *Config) { c.MaxPacketSize = 1024 })
	big := strings.Repeat("x", 4096)
	out, err := tb.mosq(t, "mosquitto_pub", "-V", "mqttv311", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "telemetry/big", "-m", big, "-q", "1")
	t.Logf("mosquitto_pub oversized: err=%v out=%q", err, out)
	if got := len(tb.up.all()); got != 0 {
		t.Fatalf("oversized message reached upstream")
	}
	waitFor(t, "Oversized counted", func() bool { return tb.Stats().Oversized.Load() == 1 })
	// A small message still goes through afterwards.
	if out, err := tb.mosq(t, "mosquitto_pub", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "telemetry/small", "-m", "ok", "-q", "1"); err != nil {
		t.Fatalf("small publish after oversized: %v\n%s", err, out)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter another goroutine sets
	}
}

func TestMalformedPackets(t *testing.T) {
	tb := startBroker(t, func(c *Config) { c.DisableTLS = true; c.PlainAddr = "127.0.0.1:0" })
	addr := tb.PlainAddr().String()
	cases := []struct {
		name string
		in   []byte
	}{
		{"bad protocol name", []byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'X', 'X', 4, 0x02, 0, 60, 0, 0}},
		{"reserved connect flag", []byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 60, 0, 0}},
		{"string longer than packet", []byte{0x10, 0x0c, 0, 40, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 0}},
		{"bad remaining length", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"first packet not connect", []byte{0x30, 0x05, 0, 1, 'a', 'h', 'i'}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := tb.Stats().Malformed.Load()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(c.in); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			for {
				if _, err := conn.Read(buf); err != nil {
					break // the broker closed the connection
				}
			}
			waitFor(t, "Malformed counted", func() bool { return tb.Stats().Malformed.Load() > before })
		})
	}
}

func TestSleepyDeviceGetsCommand(t *testing.T) {
	tb := startBroker(t, nil)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			sub := func(ep, pw, wait string) string {
				out, _ := tb.mosq(t, "mosquitto_sub", "-V", v, "-c", "-q", "1", "-u", ep, "-P", pw, "-i", ep,
					"-t", "cmd/#", "-v", "-C", "1", "-W", wait)
				return strings.TrimSpace(out)
			}
			// Both devices subscribe with a persistent session, then sleep.
			sub("sensor-1", "pw1", "1")
			sub("sensor-2", "pw2", "1")
			waitFor(t, "devices asleep", func() bool { return !tb.Connected("sensor-1") && !tb.Connected("sensor-2") })
			if err := tb.Deliver("sensor-1", "cmd/reboot", []byte("now-"+v), 1, false); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if got, want := sub("sensor-1", "pw1", "5"), "cmd/reboot now-"+v; got != want {
				t.Fatalf("sensor-1 on wake: got %q, want %q", got, want)
			}
			if got := sub("sensor-2", "pw2", "1"); strings.Contains(got, "reboot") {
				t.Fatalf("sensor-2 received sensor-1's command: %q", got)
			}
		})
	}
	if err := tb.Deliver("sensor-1", "telemetry/x", []byte("x"), 0, false); err == nil {
		t.Fatal("Deliver outside the subscribe mapping succeeded")
	}
}

func TestUpstreamRefusalNotAcked(t *testing.T) {
	tb := startBroker(t, nil)
	tb.up.mu.Lock()
	tb.up.err = fmt.Errorf("queue full")
	tb.up.mu.Unlock()
	out, _ := tb.mosq(t, "mosquitto_pub", "-V", "mqttv5", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "telemetry/x", "-m", "m", "-q", "1")
	if !strings.Contains(strings.ToLower(out), "quota exceeded") {
		t.Errorf("v5 QoS 1 refused by upstream: want 'quota exceeded', got %q", out)
	}
	for _, q := range []string{"1", "2"} {
		out, err := tb.mosq(t, "mosquitto_pub", "-V", "mqttv311", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1", "-t", "telemetry/x", "-m", "m", "-q", q)
		if err == nil {
			t.Errorf("v3.1.1 QoS %s refused by upstream: mosquitto_pub succeeded (was acknowledged): %q", q, out)
		}
	}
	if got := tb.Stats().UpstreamRefused.Load(); got != 3 {
		t.Errorf("UpstreamRefused: got %d, want 3", got)
	}
}

// TestSleepyCommandSurvivesRestart: with a session store, a command queued
// for a sleeping device is still delivered after the bridge restarted.
func TestSleepyCommandSurvivesRestart(t *testing.T) {
	db := t.TempDir() + "/sessions.db"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	mod := func(c *Config) { c.TLSAddr = addr; c.SessionDB = db }
	tb := startBroker(t, mod)
	sub := func(tb *testBroker, wait string) string {
		out, _ := tb.mosq(t, "mosquitto_sub", "-c", "-q", "1", "-u", "sensor-1", "-P", "pw1", "-i", "sensor-1",
			"-t", "cmd/#", "-v", "-C", "1", "-W", wait)
		return strings.TrimSpace(out)
	}
	sub(tb, "1")
	waitFor(t, "device asleep", func() bool { return !tb.Connected("sensor-1") })
	if err := tb.Deliver("sensor-1", "cmd/ota", []byte("v2"), 1, false); err != nil {
		t.Fatal(err)
	}
	_ = tb.Close()
	// Restart on the same port and session store, with the same site PKI.
	pki := tb.pki
	tb2 := startBroker(t, func(c *Config) { mod(c); c.TLS = pki.ServerTLS(t, "127.0.0.1", "localhost") })
	tb2.pki = pki
	if got := sub(tb2, "5"); got != "cmd/ota v2" {
		t.Fatalf("after restart the device got %q, want %q", got, "cmd/ota v2")
	}
	waitFor(t, "Connected gauge back to 0", func() bool { return tb2.Stats().Connected.Load() == 0 })
}

func TestIdleConnectionClosed(t *testing.T) {
	tb := startBroker(t, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", tb.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Send nothing (not even a TLS ClientHello): the broker must hang up.
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read returned data, want the broker to close the connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the broker kept the idle connection open for 10s")
	}
	waitFor(t, "Timeouts counted", func() bool { return tb.Stats().Timeouts.Load() == 1 })
}
