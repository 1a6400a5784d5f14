package e2e

// Issue 17: the central MQTT client IDs and topics carry the site, so two
// sites may both have an endpoint called sensor-17.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestTwoSitesSameEndpointName: a second real bridge (site plant-b,
// 10.10.9.0/24, its own PPP identity at the gateway) runs next to plant-a
// in edge; both have an MQTT endpoint sensor-17. Central mosquitto sees
// two sessions, plant-a/sensor-17 from 10.10.8.17 and plant-b/sensor-17
// from 10.10.9.17, neither taken over; each device's telemetry arrives
// under its own site's topic and each device gets its own command only.
func TestTwoSitesSameEndpointName(t *testing.T) {
	t.Parallel()
	const passB = "e2e-ppp-pw-plant-b"
	var cfgB string
	m := setupMQTTWith(t, []string{"sensor-17"}, "", func(m *mqttEnv) {
		g, err := os.ReadFile(m.GatewayConfig)
		if err != nil {
			t.Fatal(err)
		}
		idB := fmt.Sprintf("  - name: plant-b\n    auth: psk\n    ppp: {user: plant-b, password: %q, methods: [mschapv2]}\n    routes: [10.10.9.0/24]\n    policy: central\nmetrics:", passB)
		m.write(m.GatewayConfig, strings.Replace(string(g), "metrics:", idB, 1))
		// Bridge B: same gateway and central broker, its own listeners.
		b, err := os.ReadFile(m.BridgeConfig)
		if err != nil {
			t.Fatal(err)
		}
		r := strings.NewReplacer("site: plant-a", "site: plant-b", "prefix: 10.10.8.0/24", "prefix: 10.10.9.0/24",
			"bridge_address: 10.10.8.1", "bridge_address: 10.10.9.1", "bridge-state", "bridge-b-state",
			":5684", ":5694", ":8883\"", ":8884\"", bridgeHTTP, "127.0.0.1:9421", "local_id: "+siteID, "local_id: plant-b.sites.example",
			"ppp_user: "+pppUser, "ppp_user: plant-b", strconv.Quote(pppPass), strconv.Quote(passB))
		cfgB = filepath.Join(m.Dir, "bridge-b.yaml")
		m.write(cfgB, r.Replace(string(b)))
		m.mustRun(nil, Bin(t, "bridge"), "--check-config", cfgB)
	})
	epA := m.Endpoint("sensor-17")
	out := m.mustRun(nil, Bin(t, "bridge"), "-c", cfgB, "endpoint", "add", "sensor-17", "--protocol", "mqtt")
	d := cDefines(out)
	pskB := d["FLEETGATE_PSK"]
	if d["FLEETGATE_VPN_ADDR"] != "10.10.9.17" || pskB == "" {
		t.Fatalf("site B endpoint add: %s", out)
	}
	m.startDaemon(m.Edge, "bridge", "run", "-c", cfgB)
	bHTTP := "127.0.0.1:9421"
	m.waitFor("site B uplink up", 60*time.Second, nil, func() bool {
		return strings.Contains(string(m.get(m.Edge, bHTTP, "/status")), `"uplink":"up`)
	})
	centralLog := func() string { return m.central.Proc.Output() }
	if !Poll(30*time.Second, func() bool {
		l := centralLog()
		return strings.Contains(l, "from "+epA.Addr.String()) && strings.Contains(l, " as plant-a/sensor-17 ") &&
			strings.Contains(l, "from 10.10.9.17:") && strings.Contains(l, " as plant-b/sensor-17 ")
	}) {
		t.Fatalf("central does not show both sites' sensor-17 sessions:\n%s", centralLog())
	}

	devA := m.deviceArgs(epA)
	caB := filepath.Join(m.Dir, "bridge-b-state", "ca", "ca.pem")
	devB := []string{"-h", BridgeLAN.String(), "-p", "8884", "--cafile", caB, "-i", "sensor-17", "-u", "sensor-17", "-P", pskB}
	sub := m.central.Subscribe(t, m.Central, "sites/+/sensor-17/telemetry/#", "-q", "1")
	for site, args := range map[string][]string{"plant-a": devA, "plant-b": devB} {
		if out, err := m.Sensors.Run(m.Context(20*time.Second), "mosquitto_pub", append(args, "-t", "telemetry/t", "-m", "from-"+site, "-q", "1")...); err != nil {
			t.Fatalf("%s device publish: %v\n%s", site, err, out)
		}
	}
	got := strings.Join(sub.Wait(t, 2, 30*time.Second), "\n")
	for _, site := range []string{"plant-a", "plant-b"} {
		if !strings.Contains(got, "sites/"+site+"/sensor-17/telemetry/t from-"+site) {
			t.Fatalf("central telemetry: %q lacks %s's", got, site)
		}
	}
	// Commands (after the publishes: a device has one client ID, one
	// connection at a time): each device listens with a persistent session.
	subs := map[string]*netns.Proc{}
	for site, args := range map[string][]string{"plant-a": devA, "plant-b": devB} {
		a := append([]string{"-oL", "mosquitto_sub"}, args...)
		p := netns.Start(t, m.Sensors.Command("stdbuf", append(a, "-c", "-q", "1", "-d", "-t", "cmd/#", "-v")...))
		if !Poll(15*time.Second, func() bool { return strings.Contains(p.Output(), "received SUBACK") }) {
			t.Fatalf("%s device: no SUBACK:\n%s", site, p.Output())
		}
		subs[site] = p
	}
	for _, site := range []string{"plant-a", "plant-b"} {
		m.central.Pub(t, m.Central, "sites/"+site+"/sensor-17/cmd/led", "for-"+site, "-q", "1")
	}
	for site, p := range subs {
		if !Poll(30*time.Second, func() bool { return strings.Contains(p.Output(), "cmd/led for-"+site) }) {
			t.Fatalf("%s device did not get its command:\n%s", site, p.Output())
		}
	}
	time.Sleep(500 * time.Millisecond)
	for site, p := range subs {
		for _, other := range []string{"plant-a", "plant-b"} {
			if other != site && strings.Contains(p.Output(), "for-"+other) {
				t.Fatalf("%s device got %s's command:\n%s", site, other, p.Output())
			}
		}
	}
	if l := centralLog(); strings.Contains(l, "already connected") || strings.Contains(l, "taken over") {
		t.Fatalf("central sessions took each other over:\n%s", l)
	}
	t.Logf("central: %q; both devices got their own command", got)
}
