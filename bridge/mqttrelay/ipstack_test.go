package mqttrelay

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/spool"
	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// TestRelayThroughIPStack: the relay dials through the userspace IP stack
// (ipstack.Stack.DialTCP as Config.Dial) from each endpoint's own address
// in the site prefix, which the stack routes as a whole (AddPrefix). The far stack stands in for the VPN side: it accepts
// on the central broker's VPN address, records the source address and
// forwards the bytes to a real mosquitto.
func TestRelayThroughIPStack(t *testing.T) {
	central := startMosquitto(t)
	pair := ipstacktest.NewPair(t, 0)
	// The bridge's stack owns the site prefix as one route, no address per
	// endpoint: the relay's dials are spoofed-source.
	if err := pair.A.AddPrefix(netip.MustParsePrefix("10.10.8.0/24")); err != nil {
		t.Fatal(err)
	}
	if n := len(pair.A.Addresses()); n != 0 {
		t.Fatalf("got %d stack addresses, want 0", n)
	}
	if err := pair.B.AddAddress(netip.MustParsePrefix("10.20.0.1/32")); err != nil {
		t.Fatal(err)
	}
	ln, err := pair.B.ListenTCP(netip.MustParseAddrPort("10.20.0.1:1883"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var mu sync.Mutex
	var sources []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			sources = append(sources, c.RemoteAddr().String())
			mu.Unlock()
			up, err := net.Dial("tcp", central.addr)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()

	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	addrs := map[string]netip.Addr{"sensor-17": netip.MustParseAddr("10.10.8.17"), "sensor-18": netip.MustParseAddr("10.10.8.18")}
	r, err := New(Config{
		Site: "s1", Server: netip.MustParseAddrPort("10.20.0.1:1883"), Spool: sp, Dial: pair.A.DialTCP,
		AddrOf:     func(ep string) (netip.Addr, bool) { a, ok := addrs[ep]; return a, ok },
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	host, port, _ := net.SplitHostPort(central.addr)
	subOut := make(chan string, 1)
	go func() {
		out, _ := runTool(t, "mosquitto_sub", "-h", host, "-p", port, "-t", "sites/s1/#", "-v", "-q", "1", "-C", "2", "-W", "15")
		subOut <- out
	}()
	waitFor(t, 10*time.Second, "central subscriber", func() bool { return strings.Contains(central.log(t), "sites/s1/#") })
	for _, ep := range []string{"sensor-17", "sensor-18"} {
		if err := r.Publish(ep, mqtt.Message{Topic: "telemetry/t", Payload: []byte(ep), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, ep+" delivered", func() bool { n, _, _ := sp.Depth(ep); return n == 0 })
	}
	got := strings.TrimSpace(<-subOut)
	if got != "sites/s1/sensor-17/telemetry/t sensor-17\nsites/s1/sensor-18/telemetry/t sensor-18" {
		t.Fatalf("central got:\n%s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("VPN-side sources: %v", sources)
	if len(sources) != 2 || !strings.HasPrefix(sources[0], "10.10.8.17:") || !strings.HasPrefix(sources[1], "10.10.8.18:") {
		t.Fatalf("sources seen on the VPN side: got %v, want 10.10.8.17 then 10.10.8.18", sources)
	}
}
