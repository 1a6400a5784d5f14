package mqtt

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// FuzzTopicACL checks the filter logic against brute force: if filter f is
// judged within allowed filter a, every sample topic f matches must be
// matched by a; CanPublish/CanSubscribe never panic.
func FuzzTopicACL(f *testing.F) {
	f.Add("cmd/#", "cmd/+/x", "cmd/a/x")
	f.Add("telemetry/#", "telemetry", "telemetry")
	f.Add("+/+", "a/#", "a/b/c")
	f.Add("#", "$SYS/#", "$SYS/x")
	f.Fuzz(func(t *testing.T, a, fl, topic string) {
		acl := ACL{Publish: []string{a}, Subscribe: []string{a}}
		_ = acl.CanPublish(topic)
		_ = acl.CanSubscribe(fl)
		if !validFilter(a) || !validFilter(fl) || !validTopicName(topic) {
			return
		}
		if filterWithin(fl, a) && matchFilter(fl, topic) && !matchFilter(a, topic) {
			t.Fatalf("filter %q judged within %q, but topic %q matches only the first", fl, a, topic)
		}
		// A topic built from the filter by filling wildcards must match it.
		filled := strings.ReplaceAll(strings.ReplaceAll(fl, "+", "x"), "#", "y/z")
		if !matchFilter(fl, filled) {
			t.Fatalf("filter %q does not match its own instance %q", fl, filled)
		}
	})
}

// mqttConnect encodes an MQTT 3.1.1 CONNECT for client/user id with
// password pw (MQTT 3.1.1 §3.1).
func mqttConnect(id, pw string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2, 0, 60) // level 4, username+password+clean, keepalive 60
	body = append(body, str(id)...)
	body = append(body, str(id)...)
	body = append(body, str(pw)...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

func mqttPublish(topic, payload string, qos byte) []byte {
	body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
	if qos > 0 {
		body = append(body, 0, 1)
	}
	body = append(body, payload...)
	// Remaining length as a variable byte integer (MQTT 3.1.1 §2.2.3).
	pk := []byte{0x30 | qos<<1}
	for n := len(body); ; {
		b := byte(n % 128)
		if n /= 128; n > 0 {
			b |= 0x80
		}
		pk = append(pk, b)
		if n == 0 {
			break
		}
	}
	return append(pk, body...)
}

// FuzzBrokerInput feeds arbitrary bytes after a valid CONNECT into the
// broker (mochi's parser plus our hooks): it must never panic, and nothing
// outside the endpoint's publish mapping may reach the Upstream.
func FuzzBrokerInput(f *testing.F) {
	up := newRecorder()
	b, err := New(Config{DisableTLS: true, Auth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1"}}, Upstream: up, MaxPacketSize: 4096})
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = b.Close() })
	f.Add(mqttPublish("telemetry/t", "1", 1))
	f.Add(mqttPublish("cmd/x", "evil", 1))
	f.Add(append(mqttPublish("telemetry/t", "a", 2), 0x62, 0x02, 0x00, 0x01))                 // + PUBREL
	f.Add([]byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, '#', 0x01})                              // SUBSCRIBE "#"
	f.Add([]byte{0x82, 0x0a, 0x00, 0x02, 0x00, 0x05, 'c', 'm', 'd', '/', '#', 0x02, 0xc0, 0}) // SUBSCRIBE cmd/# + PINGREQ
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	connect := mqttConnect("sensor-1", "pw1")
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		go func() {
			_, _ = cli.Write(connect)
			_, _ = cli.Write(in)
			_ = cli.Close()
		}()
		_ = b.srv.EstablishConnection("fuzz", srv)
		for _, m := range up.all() {
			parts := strings.SplitN(m, "|", 3)
			if parts[0] != "sensor-1" || !b.acl.CanPublish(parts[1]) {
				t.Fatalf("upstream got a message outside the mapping: %q", m)
			}
		}
	})
}

// TestRawConnectionPublishes checks the raw harness FuzzBrokerInput uses:
// a hand-encoded CONNECT + PUBLISH reaches the Upstream, an injected
// topic does not.
func TestRawConnectionPublishes(t *testing.T) {
	up := newRecorder()
	b, err := New(Config{DisableTLS: true, Auth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1"}}, Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	srv, cli := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	go func() {
		_, _ = cli.Write(mqttConnect("sensor-1", "pw1"))
		_, _ = cli.Write(mqttPublish("telemetry/t", "42", 0))
		_, _ = cli.Write(mqttPublish("ep/sensor-2/telemetry/t", "evil", 0))
		_, _ = cli.Write([]byte{0xe0, 0x00}) // DISCONNECT
		_ = cli.Close()
	}()
	_ = b.srv.EstablishConnection("raw", srv)
	if got, want := strings.Join(up.all(), ","), "sensor-1|telemetry/t|42|0|false|false"; got != want {
		t.Fatalf("upstream: got %q, want %q", got, want)
	}
	if got := b.Stats().TopicDenied.Load(); got != 1 {
		t.Fatalf("TopicDenied: got %d, want 1", got)
	}
}

// TestWillRelayedUpstream: a device that vanishes without DISCONNECT has
// its last will published on its behalf; the broker hands it upstream,
// marked as a will, with the device-side topic.
func TestWillRelayedUpstream(t *testing.T) {
	up := newRecorder()
	b, err := New(Config{DisableTLS: true, Auth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1"}}, Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2|0x04|0x08|0x20, 0, 60) // user, password, clean, will flag, will QoS 1, will retain
	for _, f := range []string{"sensor-1", "status/online", "offline", "sensor-1", "pw1"} {
		body = append(body, str(f)...)
	}
	srv, cli := net.Pipe()
	go func() {
		_, _ = cli.Write(append([]byte{0x10, byte(len(body))}, body...))
		connack := make([]byte, 4)
		_, _ = io.ReadFull(cli, connack)
		_ = cli.Close() // vanish after the session is up: no DISCONNECT
	}()
	_ = b.srv.EstablishConnection("raw", srv)
	if got, want := strings.Join(up.all(), ","), "sensor-1|status/online|offline|1|true|true"; got != want {
		t.Fatalf("upstream: got %q, want %q", got, want)
	}
}

// TestPublishRateLimit: a flooding device is held to its rate (fake
// clock), the excess refused and counted.
func TestPublishRateLimit(t *testing.T) {
	clk := stacktest.NewClock()
	up := newRecorder()
	b, err := New(Config{DisableTLS: true, Auth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1"}}, Upstream: up,
		PublishRate: 1, PublishBurst: 2, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	session := func(n int) {
		srv, cli := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		go func() {
			_, _ = cli.Write(mqttConnect("sensor-1", "pw1"))
			for i := 0; i < n; i++ {
				_, _ = cli.Write(mqttPublish("telemetry/t", "m", 0))
			}
			_, _ = cli.Write([]byte{0xe0, 0x00})
			_ = cli.Close()
		}()
		_ = b.srv.EstablishConnection("raw", srv)
	}
	session(5)
	if got := len(up.all()); got != 2 {
		t.Fatalf("after a burst of 5: upstream got %d, want 2 (the burst)", got)
	}
	if got := b.Stats().RateLimited.Load(); got != 3 {
		t.Fatalf("RateLimited: got %d, want 3", got)
	}
	clk.Advance(time.Second)
	session(2)
	if got := len(up.all()); got != 3 {
		t.Fatalf("one second later: upstream got %d, want 3", got)
	}
}

// TestPublishByteRateLimit: a device under its message rate but sending
// big payloads is held to its byte rate (fake clock): the burst passes,
// the rest is refused and counted, and the bytes come back with time.
// The default applies when nothing is configured.
func TestPublishByteRateLimit(t *testing.T) {
	clk := stacktest.NewClock()
	up := newRecorder()
	b, err := New(Config{DisableTLS: true, Auth: StaticAuth{Passwords: map[string]string{"sensor-1": "pw1"}}, Upstream: up,
		MaxPacketSize: 8 << 10, PublishByteRate: 1000, PublishByteBurst: 3000, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	// The burst is raised to the packet size limit (8 KiB).
	if got := b.cfg.PublishByteBurst; got != 8<<10 {
		t.Fatalf("burst: got %d, want the packet size limit %d", got, 8<<10)
	}
	payload := strings.Repeat("x", 2000-len("telemetry/t"))
	session := func(n int) {
		srv, cli := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		go func() {
			_, _ = cli.Write(mqttConnect("sensor-1", "pw1"))
			for i := 0; i < n; i++ {
				_, _ = cli.Write(mqttPublish("telemetry/t", payload, 0))
			}
			_, _ = cli.Write([]byte{0xe0, 0x00})
			_ = cli.Close()
		}()
		_ = b.srv.EstablishConnection("raw", srv)
	}
	session(10) // 20,000 bytes against an 8,192-byte burst
	if got := len(up.all()); got != 4 {
		t.Fatalf("after 10 publishes of 2000 B: upstream got %d, want 4 (8 KiB burst)", got)
	}
	if got := b.Stats().ByteRateLimited.Load(); got != 6 {
		t.Fatalf("ByteRateLimited: got %d, want 6", got)
	}
	clk.Advance(4 * time.Second) // 4000 bytes back
	session(3)
	if got := len(up.all()); got != 6 {
		t.Fatalf("4 s later: upstream got %d, want 6", got)
	}

	d, err := New(Config{DisableTLS: true, Auth: StaticAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	if d.cfg.PublishByteRate != DefaultPublishByteRate || d.cfg.PublishByteBurst != DefaultPublishByteBurst {
		t.Fatalf("defaults: got %v B/s burst %d, want %d burst %d", d.cfg.PublishByteRate, d.cfg.PublishByteBurst, DefaultPublishByteRate, DefaultPublishByteBurst)
	}
}
