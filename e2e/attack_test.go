package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/mqtt/mqtttest"
	"github.com/fleetgate/fleetgate/internal/procstat"
)

// TestAttackDTLSFloodRealBridge is issue 18's finding 2 against the real
// bridge binary: 40,000 well-formed ClientHellos at 4,000/s from the
// sensors namespace, each from its own spoofed source address
// (172.16.16.0–172.16.172.255, sent with IP_TRANSPARENT + IP_PKTINFO; the
// bridge's HelloVerifyRequests to them leave by its default route and are
// lost), while a real device completes a handshake and a request. The
// bridge process's RSS (VmRSS) must grow by less than 64 MB (before the
// stateless cookie: 19.5 MB → 1.35 GB).
func TestAttackDTLSFloodRealBridge(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}}})
	startCoapSink(t, env)
	// Spoofed sources arrive on edge's sensors link from outside its
	// subnet: no reverse-path filter there (a site LAN router might have
	// one; the bridge must hold without it).
	for _, k := range []string{"all", "default"} {
		if out, err := env.Edge.Run(context.Background(), "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0"); err != nil {
			t.Fatalf("sysctl: %v %s", err, out)
		}
	}
	if out, err := env.Edge.Run(context.Background(), "sh", "-c", "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"); err != nil {
		t.Fatalf("rp_filter: %v %s", err, out)
	}
	pid := env.BridgeProc().PID
	warm := dialDevice(t, env, env.Endpoint("sensor-17"), nil, nil)
	if code, _ := warm.post(t, "/warm", "1"); code != codes.Changed && code != codes.Content {
		t.Fatalf("warm-up request: %v", code)
	}
	time.Sleep(300 * time.Millisecond)
	hvr0 := env.Metric("coap_hello_verify_sent_total")
	rss := procstat.WatchRSS(pid)
	base := rss.Base

	pc, err := env.Sensors.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := pc.(*net.UDPConn)
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) }); err != nil || serr != nil {
		t.Fatalf("IP_TRANSPARENT: %v %v", err, serr)
	}
	const hellos, rate = 40000, 4000
	to := &net.UDPAddr{IP: BridgeLAN.AsSlice(), Port: CoAPSPort}
	half := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		sent <- coaptest.HelloFlood(t, c, to, hellos, rate, half, func(i int) [4]byte {
			return [4]byte{172, 16, byte(16 + i/250), byte(1 + i%250)}
		})
	}()
	<-half
	s0 := time.Now()
	d := dialDevice(t, env, env.Endpoint("sensor-17"), nil, nil)
	code, _ := d.post(t, "/during", "1")
	took := time.Since(s0)
	n := <-sent
	time.Sleep(500 * time.Millisecond)
	peak := rss.Stop()
	hvr := env.Metric("coap_hello_verify_sent_total") - hvr0
	pending := env.Metric("coap_pending_handshakes")
	growth := peak - base
	t.Logf("real bridge: %d spoofed ClientHellos at %d/s, %v HelloVerifyRequests sent; bridge RSS %.1f MB → peak %.1f MB (%+.1f MB); device handshake + request mid-flood %v (%v); pending handshakes after %v",
		n, rate, hvr, float64(base)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20), took.Round(time.Millisecond), code, pending)
	if n != hellos {
		t.Fatalf("sent %d of %d", n, hellos)
	}
	if code != codes.Changed && code != codes.Content {
		t.Fatalf("device request during the flood: %v", code)
	}
	if hvr < hellos/2 { // a loaded machine may drop some in the socket buffer
		t.Fatalf("the bridge answered %v of %d spoofed ClientHellos: the flood did not reach it", hvr, hellos)
	}
	if growth >= 64<<20 {
		t.Fatalf("bridge RSS grew by %.1f MB during the flood, bound 64 MB", float64(growth)/(1<<20))
	}
}

// TestAttackMQTTDeviceFloodsRealBridge is issue 18's finding 3 against the
// real bridge binary: one MQTT device with its own valid PSK, from the
// sensors namespace, floods topic aliases (and 20 KB topics), retained
// messages and subscriptions, and opens 3,000 TLS connections that never
// send CONNECT. After each flood the bridge process's RSS (peak, VmRSS)
// must have grown by less than 32 MB and its session store
// (state_dir/mqtt-sessions.db) by less than 8 MB (before: aliases 22.8 →
// 515 MB in 5 s, retained 64 KB → 170 MB of session store in 16 s).
//
// The retained flood is 600 × 200 KB = 120 MB of publishes: the broker no
// longer keeps retained copies, and the per-device byte rate
// (mqtt.publish_byte_rate, default 64 KiB/s, burst 1 MiB) refuses what one
// device sends beyond it, so the relay and spool never carry it (before
// that bound the bridge's RSS peaked at +88-103 MB on this flood).
func TestAttackMQTTDeviceFloodsRealBridge(t *testing.T) {
	t.Parallel()
	m := setupMQTT(t, []string{"pump-4"}, "")
	ep := m.Endpoint("pump-4")
	dev := mqtttest.Device{Name: ep.Name, Username: ep.Identity, Password: ep.PSK, DialContext: m.Sensors.DialContext}
	addr := net.JoinHostPort(BridgeLAN.String(), strconv.Itoa(MQTTSPort))
	db := filepath.Join(m.Dir, "bridge-state", "mqtt-sessions.db")
	pid := m.BridgeProc().PID
	_ = dev.Dial(t, addr, 5).Close() // warm-up: TLS and a session
	time.Sleep(300 * time.Millisecond)
	floods := []struct {
		name, counter string
		run           func() (string, func())
	}{
		{"aliases", "alias_refused", func() (string, func()) { return dev.Aliases(t, addr, 1000), func() {} }},
		{"long topics", "topic_too_long", func() (string, func()) { return dev.LongTopics(t, addr, 300), func() {} }},
		{"subscriptions", "subscription_refused", func() (string, func()) { return dev.Subscriptions(t, addr, 50), func() {} }},
		{"connections", "pending_connect_refused_source", func() (string, func()) { return dev.IdleConnectionsFrom(t, addr, 3000) }},
		{"retained", "retain_dropped", func() (string, func()) {
			b0 := m.Metric(`mqtt_events_total{event="byte_rate_limited"}`)
			what := dev.Retained(t, addr, 600, 200<<10)
			if n := m.Metric(`mqtt_events_total{event="byte_rate_limited"}`) - b0; n == 0 {
				t.Errorf("retained: 120 MB from one device and the byte rate limit never refused one")
			} else {
				what += fmt.Sprintf(", %v refused by the byte rate limit", n)
			}
			return what, func() {}
		}},
	}
	for _, f := range floods {
		series := `mqtt_events_total{event="` + f.counter + `"}`
		c0 := m.Metric(series)
		rss, disk0 := procstat.WatchRSS(pid), fileSize(db)
		base := rss.Base
		what, release := f.run()
		time.Sleep(500 * time.Millisecond)
		peak := rss.Stop()
		release()
		growth, disk := peak-base, fileSize(db)-disk0
		hits := m.Metric(series) - c0
		t.Logf("%s: %s; bridge RSS %.1f MB → peak %.1f MB (%+.1f MB); mqtt-sessions.db %+d KB; %s +%v",
			f.name, what, float64(base)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20), disk>>10, series, hits)
		if hits == 0 {
			t.Errorf("%s: %s did not move: the flood never hit its bound", f.name, series)
		}
		if growth >= 32<<20 {
			t.Errorf("%s: bridge RSS grew by %.1f MB, bound 32 MB", f.name, float64(growth)/(1<<20))
		}
		if disk >= 8<<20 {
			t.Errorf("%s: session store grew by %d KB, bound 8 MB", f.name, disk>>10)
		}
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
