package e2e

// MQTT end to end (issue 7) with the real daemons in namespaces: devices
// in sensors talk MQTT over TLS to the bridge's site broker on
// 172.16.1.1:8883 (site CA); the bridge relays each endpoint's session
// through the L2TP/IPsec uplink, from the endpoint's own 10.10.8.N
// address, to a real mosquitto in central (TLS, its own CA).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// centralMQTT is where the central mosquitto listens (TLS).
var centralMQTT = netip.AddrPortFrom(CentralAddr, 8883)

// mqttEnv is Setup with MQTT endpoints and a TLS mosquitto in central
// (started before the daemons, so the relay's first connects succeed).
type mqttEnv struct {
	*Env
	central *realpeer.Mosquitto
	// siteCA is the bridge's site CA file (what devices trust).
	siteCA string
}

// setupMQTT provisions names as MQTT endpoints, starts mosquitto (TLS,
// central CA) in central, then the gateway and the bridge with the MQTT
// side enabled, and waits for the uplink. extra is appended inside the
// bridge's mqtt: section (two-space indented lines).
func setupMQTT(t *testing.T, names []string, extra string) *mqttEnv {
	t.Helper()
	return setupMQTTWith(t, names, extra, nil)
}

// setupMQTTWith is setupMQTT calling before (if not nil) once the
// endpoints are provisioned and mosquitto runs, before the daemons start.
func setupMQTTWith(t *testing.T, names []string, extra string, before func(*mqttEnv)) *mqttEnv {
	t.Helper()
	for _, b := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub", "stdbuf"} {
		testenv.RequireBinary(t, b)
	}
	ca := realpeer.NewTLSCA(t, "fleetgate e2e central CA")
	var eps []EndpointSpec
	for _, n := range names {
		eps = append(eps, EndpointSpec{Name: n, Protocol: "mqtt"})
	}
	yaml := fmt.Sprintf(`mqtt:
  enabled: true
  tls_listen: "%s:%d"
  central: %s
  central_tls: true
  central_ca: %s
  central_server_name: %s
%s`, BridgeLAN, MQTTSPort, centralMQTT, ca.CAFile, CentralAddr, extra)
	env := Setup(t, Options{NoStart: true, Endpoints: eps, BridgeYAML: yaml})
	m := &mqttEnv{Env: env, siteCA: filepath.Join(env.Dir, "bridge-state", "ca", "ca.pem")}
	if _, err := os.Stat(m.siteCA); err != nil {
		t.Fatalf("site CA after endpoint add: %v", err)
	}
	// No inflight limit and a deep queue for the central application: with
	// a limit, mosquitto queues what a subscriber cannot take yet and may
	// send newer messages before the queued ones (it promises order only
	// for a limit of 1), and with the default queue (1000) it drops a
	// replayed backlog; either would be mosquitto's doing, not the
	// bridge's. (The relay's window against mosquitto's default limit, which
	// also bounds unreleased incoming QoS 2, is bridge/mqttrelay's
	// TestQoS2ReplayWithinBrokerQuota.)
	m.central = realpeer.StartMosquitto(t, env.Central, realpeer.MosquittoConfig{
		Listen: netip.AddrPortFrom(netip.IPv4Unspecified(), centralMQTT.Port()), TLS: true, CA: ca,
		Extra: "max_inflight_messages 0\nmax_queued_messages 100000\n"})
	if before != nil {
		before(m)
	}
	env.StartGateway()
	env.StartBridge()
	env.WaitUplinkUp(60 * time.Second)
	return m
}

// deviceArgs are mosquitto_pub/sub flags connecting as endpoint ep to the
// site broker over TLS, trusting only the site CA.
func (m *mqttEnv) deviceArgs(ep *Endpoint) []string {
	return []string{"-h", BridgeLAN.String(), "-p", strconv.Itoa(MQTTSPort), "--cafile", m.siteCA,
		"-i", ep.Name, "-u", ep.Identity, "-P", ep.PSK}
}

// waitCentralSessions waits until mosquitto's log shows every endpoint's
// relay session connecting with client ID = site/endpoint from the
// endpoint's own VPN address, and returns those log lines.
func (m *mqttEnv) waitCentralSessions(t *testing.T, eps []*Endpoint, timeout time.Duration) []string {
	t.Helper()
	var lines []string
	ok := Poll(timeout, func() bool {
		lines = lines[:0]
		log := m.central.Proc.Output()
		for _, ep := range eps {
			re := regexp.MustCompile(`New client connected from ` + regexp.QuoteMeta(ep.Addr.String()) + `:\d+ as ` + regexp.QuoteMeta(siteName+"/"+ep.Name) + ` .*`)
			l := re.FindString(log)
			if l == "" {
				return false
			}
			lines = append(lines, l)
		}
		return true
	})
	if !ok {
		t.Fatalf("central mosquitto log does not show every endpoint (%v) connecting from its own address:\n%s", eps, m.central.Proc.Output())
	}
	return lines
}

// TestMqttMosquittoDevices: mosquitto_pub/mosquitto_sub in sensors are
// the devices (TLS, site CA, PSK login, MQTT 3.1.1 and 5); the central
// mosquitto's log shows each endpoint's relay session from its own
// 10.10.8.N address; a mosquitto_sub in central gets the devices'
// messages under sites/plant-a/<endpoint>/...; a command published
// centrally under .../cmd/... reaches the device's mosquitto_sub.
func TestMqttMosquittoDevices(t *testing.T) {
	t.Parallel() // own namespaces and daemons
	m := setupMQTT(t, []string{"meter-1", "meter-2"}, "")
	eps := []*Endpoint{m.Endpoint("meter-1"), m.Endpoint("meter-2")}
	for _, l := range m.waitCentralSessions(t, eps, 30*time.Second) {
		t.Logf("central mosquitto: %s", l)
	}
	sub := m.central.Subscribe(t, m.Central, "sites/plant-a/#", "-q", "2")
	versions := map[string][]string{"meter-1": {"-V", "mqttv311", "-q", "1"}, "meter-2": {"-V", "mqttv5", "-q", "2"}}
	var want []string
	for _, ep := range eps {
		msg := "21.5 from " + ep.Name
		args := append(append(m.deviceArgs(ep), "-t", "telemetry/temp", "-m", msg), versions[ep.Name]...)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := m.Sensors.Run(ctx, "mosquitto_pub", args...)
		cancel()
		if err != nil {
			t.Fatalf("device %s: mosquitto_pub: %v\n%s", ep.Name, err, out)
		}
		want = append(want, "sites/plant-a/"+ep.Name+"/telemetry/temp "+msg)
	}
	got := sub.Wait(t, len(want), 30*time.Second)
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("central mosquitto_sub: no %q in %q", w, got)
		}
	}
	t.Logf("central mosquitto_sub received: %q", got)

	// Commands: each device subscribes to cmd/# with a persistent session;
	// a central publish under the endpoint's cmd/ reaches it, and only it.
	devSubs := map[string]*netns.Proc{}
	for _, ep := range eps {
		args := append([]string{"-oL", "mosquitto_sub"}, m.deviceArgs(ep)...)
		args = append(append(args, "-c", "-d", "-t", "cmd/#", "-v"), versions[ep.Name]...)
		p := netns.Start(t, m.Sensors.Command("stdbuf", args...))
		if !Poll(15*time.Second, func() bool { return strings.Contains(p.Output(), "received SUBACK") }) {
			t.Fatalf("device %s: mosquitto_sub got no SUBACK:\n%s", ep.Name, p.Output())
		}
		devSubs[ep.Name] = p
	}
	for _, ep := range eps {
		m.central.Pub(t, m.Central, "sites/plant-a/"+ep.Name+"/cmd/led", "on-"+ep.Name, "-q", "1")
	}
	for _, ep := range eps {
		p := devSubs[ep.Name]
		want := "cmd/led on-" + ep.Name
		if !Poll(30*time.Second, func() bool { return strings.Contains(p.Output(), want) }) {
			t.Fatalf("device %s: command %q not received:\n%s", ep.Name, want, p.Output())
		}
		for _, other := range eps {
			if other != ep && strings.Contains(p.Output(), "on-"+other.Name) {
				t.Errorf("device %s received %s's command:\n%s", ep.Name, other.Name, p.Output())
			}
		}
		t.Logf("device %s received %q", ep.Name, want)
	}
	if v := m.Metric(`mqtt_events_total{event="auth_failed"}`); v != 0 {
		t.Errorf("mqtt auth failures: %v, want 0", v)
	}
}

// simDevice is an MQTT device in sensors (paho, TLS to the site broker,
// persistent session): it publishes numbered messages "<endpoint> <seq>"
// at a steady rate, each after the previous one was acknowledged, as MCU
// firmware with a persistent session would.
//
// paho (v1.5.1) completes a publish token WITHOUT error when it resends
// the message after a reconnect (resume → claimID completes the old token
// with the new one's id), before anything acknowledged it. A publish
// whose connection dropped while it was in flight is therefore counted as
// unconfirmed, not acknowledged: paho resends it, and it may or may not
// be taken (e.g. refused again by a full spool).
type simDevice struct {
	ep    *Endpoint
	qos   byte
	c     paho.Client
	acked atomic.Int64 // highest sequence number paho reported done
	// gen counts connection losses and reconnect attempts.
	gen atomic.Int64
	// unconfirmed: seqs whose connection dropped while in flight.
	unconfirmed  sync.Map
	nUnconfirmed atomic.Int64
	// retries counts publishes paho reported failed (the device sends
	// the same sequence number again, so a duplicate of it is the
	// device's, not the bridge's).
	retries atomic.Int64
	retried sync.Map // seq → true
	stop    chan struct{}
	done    chan struct{}
}

// confirmed reports whether seq was acknowledged on the connection it was
// sent on.
func (d *simDevice) confirmed(seq int64) bool {
	_, u := d.unconfirmed.Load(seq)
	return !u
}

// lastConfirmed is the highest confirmed acknowledged sequence number.
func (d *simDevice) lastConfirmed() int64 {
	s := d.acked.Load()
	for s > 0 && !d.confirmed(s) {
		s--
	}
	return s
}

func (m *mqttEnv) startDevice(t *testing.T, ep *Endpoint, qos byte, every time.Duration) *simDevice {
	return m.startDevicePad(t, ep, qos, every, 0)
}

// startDevicePad is startDevice with pad bytes of filler after the
// sequence number in every payload.
func (m *mqttEnv) startDevicePad(t *testing.T, ep *Endpoint, qos byte, every time.Duration, pad int) *simDevice {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(m.siteCA)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("site CA %s: %v", m.siteCA, err)
	}
	tc := &tls.Config{RootCAs: pool, ServerName: BridgeLAN.String(), MinVersion: tls.VersionTLS12}
	d := &simDevice{ep: ep, qos: qos, stop: make(chan struct{}), done: make(chan struct{})}
	addr := netip.AddrPortFrom(BridgeLAN, MQTTSPort).String()
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID(ep.Name).
		SetUsername(ep.Identity).SetPassword(ep.PSK).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { d.gen.Add(1) }).
		// Called synchronously before each reconnect, so before paho's
		// resume completes old tokens.
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { d.gen.Add(1) }).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := m.Sensors.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			tcn := tls.Client(c, tc)
			if err := tcn.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tcn, nil
		})
	d.c = paho.NewClient(o)
	if tok := d.c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s connect: %v", ep.Name, tok.Error())
	}
	go func() {
		defer close(d.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for seq := int64(1); ; seq++ {
			select {
			case <-d.stop:
				return
			case <-tick.C:
			}
			payload := fmt.Sprintf("%s %d", ep.Name, seq)
			if pad > 0 {
				payload += " " + strings.Repeat("x", pad)
			}
			gen := d.gen.Load()
			tok := d.c.Publish("telemetry/seq", qos, false, payload)
			select {
			case <-tok.Done():
			case <-d.stop:
				return
			}
			if tok.Error() != nil {
				d.retries.Add(1)
				d.retried.Store(seq, true)
				seq-- // not acknowledged: the device keeps it and tries again
				continue
			}
			if qos > 0 && d.gen.Load() != gen {
				d.unconfirmed.Store(seq, true)
				d.nUnconfirmed.Add(1)
			}
			d.acked.Store(seq)
		}
	}()
	t.Cleanup(func() { d.halt(); d.c.Disconnect(0) })
	return d
}

func (d *simDevice) halt() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

// collector is the central application (paho in central, TLS to
// mosquitto, QoS 2 subscription): every message per endpoint in arrival
// order.
type collector struct {
	mu  sync.Mutex
	got map[string][]int64
	n   atomic.Int64
}

func (m *mqttEnv) startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{got: make(map[string][]int64)}
	tc := &tls.Config{RootCAs: m.central.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), centralMQTT.Port()).String()
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("central-app").SetOrderMatters(true).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cn, err := m.Central.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			tcn := tls.Client(cn, tc)
			if err := tcn.HandshakeContext(ctx); err != nil {
				cn.Close()
				return nil, err
			}
			return tcn, nil
		})
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	tok := cl.Subscribe("sites/plant-a/+/telemetry/#", 2, func(_ paho.Client, msg paho.Message) {
		f := strings.Fields(string(msg.Payload()))
		if len(f) < 2 {
			return
		}
		seq, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || !strings.HasPrefix(msg.Topic(), "sites/plant-a/"+f[0]+"/") {
			return
		}
		c.mu.Lock()
		c.got[f[0]] = append(c.got[f[0]], seq)
		c.mu.Unlock()
		c.n.Add(1)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribe: %v", tok.Error())
	}
	return c
}

func (c *collector) seqs(ep string) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.got[ep]...)
}

// firstArrivalsIncreasing: ignoring repeats of already-seen numbers, the
// sequence numbers arrive in increasing order.
func firstArrivalsIncreasing(s []int64) bool {
	seen := map[int64]bool{}
	var last int64
	for _, v := range s {
		if seen[v] {
			continue
		}
		seen[v] = true
		if v < last {
			return false
		}
		last = v
	}
	return true
}

// metricOr returns a bridge /metrics series, or -1 when the bridge does not
// answer (killed, starting).
// recoverWAN checks the bridge survived the outage, restores the WAN, waits
// for the uplink and for the spool to drain, then for central to have dev's
// messages (named name) up to the last one acknowledged. It returns what
// central got, that last acknowledged sequence number, and how many
// confirmed messages up to it are missing.
func (m *mqttEnv) recoverWAN(t *testing.T, col *collector, dev *simDevice, name string) (got []int64, acked int64, missing int) {
	t.Helper()
	if p := m.BridgeProc(); p == nil {
		t.Fatal("bridge not running")
	} else {
		select {
		case <-p.Done():
			t.Fatalf("bridge exited: %v", p.Err())
		default:
		}
	}
	m.Topo.RestoreWAN(t)
	m.WaitUplinkUp(60 * time.Second)
	if !Poll(60*time.Second, func() bool { return m.metricOr("spool_messages") == 0 }) {
		t.Fatalf("spool not drained within 60s after the WAN came back: spool_messages %v", m.metricOr("spool_messages"))
	}
	acked = dev.lastConfirmed()
	if !Poll(30*time.Second, func() bool {
		s := col.seqs(name)
		return len(s) > 0 && slices.Max(s) >= acked
	}) {
		t.Fatalf("central got %s %v, want up to %d", name, col.seqs(name), acked)
	}
	got = col.seqs(name)
	seen := map[int64]bool{}
	for _, s := range got {
		seen[s] = true
	}
	for s := int64(1); s <= acked; s++ {
		if !seen[s] && dev.confirmed(s) {
			missing++
		}
	}
	return got, acked, missing
}

func (m *mqttEnv) metricOr(series string) float64 {
	b := m.get(m.Edge, bridgeHTTP, "/metrics")
	if b == nil {
		return -1
	}
	v, ok := MetricValue(string(b), series)
	if !ok {
		return -1
	}
	return v
}

// TestMqttOutageWithoutLoss: four devices in sensors publish numbered
// messages (QoS 1 and QoS 2, 20 msg/s each); the WAN is dropped with
// nftables at wan for two minutes; after one minute of it the bridge is
// killed with SIGKILL and restarted on the same state directory (spool,
// session DB). After the WAN is back every acknowledged message must have
// reached the central application exactly once (QoS 2) or at least once
// (QoS 1), in order per device.
func TestMqttOutageWithoutLoss(t *testing.T) {
	t.Parallel() // own namespaces and daemons
	start := time.Now()
	names := []string{"flow-1", "flow-2", "flow-3", "flow-4"}
	m := setupMQTT(t, names, "")
	var eps []*Endpoint
	for _, n := range names {
		eps = append(eps, m.Endpoint(n))
	}
	m.waitCentralSessions(t, eps, 30*time.Second)
	col := m.startCollector(t)
	const every = 50 * time.Millisecond
	var devs []*simDevice
	for i, ep := range eps {
		devs = append(devs, m.startDevice(t, ep, byte(1+i%2), every))
	}
	phase := func(name string) {
		t.Logf("%-6.1fs %-30s central has %5d messages, bridge spool_messages %v",
			time.Since(start).Seconds(), name, col.n.Load(), m.metricOr("spool_messages"))
	}
	phase("setup done, traffic")
	time.Sleep(5 * time.Second)
	phase("WAN cut (nftables at wan)")
	m.Topo.CutWAN(t)
	cut := time.Now()
	time.Sleep(60 * time.Second)
	queuedAtKill := m.metricOr("spool_messages")
	phase("SIGKILL bridge")
	m.KillBridge()
	m.StartBridge()
	recovered := m.metricOr("spool_recovered_messages")
	phase("bridge restarted")
	time.Sleep(time.Until(cut.Add(2 * time.Minute)))
	m.Topo.RestoreWAN(t)
	phase("WAN restored")
	m.WaitUplinkUp(60 * time.Second)
	phase("uplink up again")
	time.Sleep(3 * time.Second)
	for _, d := range devs {
		d.halt()
	}
	phase("devices stopped")
	if !Poll(60*time.Second, func() bool { return m.metricOr("spool_messages") == 0 }) {
		t.Errorf("spool not drained within 60s: spool_messages %v", m.metricOr("spool_messages"))
	}
	caughtUp := Poll(30*time.Second, func() bool {
		for _, d := range devs {
			s := col.seqs(d.ep.Name)
			if len(s) == 0 || slices.Max(s) < d.lastConfirmed() {
				return false
			}
		}
		return true
	})
	phase("drained")
	if !caughtUp {
		t.Errorf("central application did not catch up within 30s")
	}
	t.Logf("spool: %v queued at the kill, %v recovered after the restart; relay after restart: sent %v, acked %v, connects %v, device QoS 2 retransmissions dropped %v",
		queuedAtKill, recovered, m.metricOr(`mqttrelay_events_total{event="sent"}`), m.metricOr(`mqttrelay_events_total{event="acked"}`),
		m.metricOr(`mqttrelay_events_total{event="connect"}`), m.metricOr(`mqttrelay_events_total{event="duplicate_dropped"}`))
	if queuedAtKill <= 0 || recovered <= 0 {
		t.Errorf("the outage did not exercise the spool (queued at kill %v, recovered %v)", queuedAtKill, recovered)
	}
	for _, d := range devs {
		got := col.seqs(d.ep.Name)
		acked := d.acked.Load()
		count := map[int64]int{}
		for _, s := range got {
			count[s]++
		}
		var missing, dups, devDups, unconfArrived int
		var dupSeqs, missSeqs []int64
		for s := int64(1); s <= acked; s++ {
			switch {
			case !d.confirmed(s):
				if count[s] > 0 {
					unconfArrived++
				}
			case count[s] == 0:
				missing++
				missSeqs = append(missSeqs, s)
			case count[s] > 1:
				if _, ok := d.retried.Load(s); ok {
					devDups += count[s] - 1 // the device sent it twice
					continue
				}
				dups += count[s] - 1
				dupSeqs = append(dupSeqs, s)
			}
		}
		inOrder := firstArrivalsIncreasing(got)
		t.Logf("%s QoS %d (%s): acked %d (%d of them unconfirmed: in flight across a reconnect; %d arrived), received %d, missing %d, duplicates %d (+%d of device re-sends after %d failed publishes), in order %v",
			d.ep.Name, d.qos, d.ep.Addr, acked, d.nUnconfirmed.Load(), unconfArrived, len(got), missing, dups, devDups, d.retries.Load(), inOrder)
		if len(dupSeqs) > 0 {
			t.Logf("%s duplicated seqs %v", d.ep.Name, dupSeqs)
		}
		if len(missSeqs) > 0 {
			t.Logf("%s missing seqs %v", d.ep.Name, missSeqs)
		}
		if missing > 0 {
			t.Errorf("%s: %d acknowledged messages lost", d.ep.Name, missing)
		}
		if d.qos == 2 && dups > 0 {
			t.Errorf("%s: QoS 2 delivered %d duplicates", d.ep.Name, dups)
		}
		if !inOrder {
			t.Errorf("%s: out of order: %v", d.ep.Name, got)
		}
		if acked < 500 {
			t.Errorf("%s: only %d messages acknowledged: the scenario did not run", d.ep.Name, acked)
		}
	}
	t.Logf("total %.1fs", time.Since(start).Seconds())
}

// TestMqttSpoolBound: the queue bound in the e2e setting. With a 64 KiB
// spool (mqtt.spool_max_bytes) and the WAN dropped, a QoS 0 device
// overflows it: the oldest QoS 0 messages are dropped
// (spool_messages_dropped_total{reason="overflow_qos0"}). A QoS 1 device
// then fills it with messages that may not be dropped, and its next one is
// refused, not acknowledged (reason="refused_full"). spool_bytes stays
// within the bound and the bridge keeps running; after the WAN is back the
// spool drains and every acknowledged QoS 1 message reaches the central
// application, in order.
func TestMqttSpoolBound(t *testing.T) {
	t.Parallel() // own namespaces and daemons
	const bound = 64 << 10
	// No byte rate limit: the devices fill the spool at 200-500 KB/s.
	m := setupMQTT(t, []string{"tank-1", "tank-2"}, fmt.Sprintf("  spool_max_bytes: %d\n  publish_byte_rate: -1\n", bound))
	eps := []*Endpoint{m.Endpoint("tank-1"), m.Endpoint("tank-2")}
	m.waitCentralSessions(t, eps, 30*time.Second)
	col := m.startCollector(t)
	const (
		overflow = `spool_messages_dropped_total{reason="overflow_qos0"}`
		refused  = `spool_messages_dropped_total{reason="refused_full"}`
	)
	m.Topo.CutWAN(t)
	q0 := m.startDevicePad(t, eps[0], 0, 2*time.Millisecond, 1000)
	if !Poll(30*time.Second, func() bool { return m.metricOr(overflow) > 0 }) {
		t.Fatalf("no QoS 0 overflow within 30s: %s %v, spool_bytes %v", overflow, m.metricOr(overflow), m.metricOr("spool_bytes"))
	}
	q0.halt()
	q1 := m.startDevicePad(t, eps[1], 1, 5*time.Millisecond, 1000)
	if !Poll(30*time.Second, func() bool { return m.metricOr(refused) > 0 }) {
		t.Fatalf("no QoS 1 refusal within 30s: %s %v, spool_bytes %v", refused, m.metricOr(refused), m.metricOr("spool_bytes"))
	}
	q1.halt()
	q1.c.Disconnect(0) // it would resend the refused message forever
	text := m.Metrics()
	val := func(series string) float64 {
		v, ok := MetricValue(text, series)
		if !ok {
			t.Fatalf("bridge /metrics has no %s", series)
		}
		return v
	}
	t.Logf("WAN down: QoS 0 device sent %d, QoS 1 device acked %d (%d unconfirmed); %s %v, %s %v, spool_messages %v, spool_bytes %v (bound %d), mqtt upstream_refused %v",
		q0.acked.Load(), q1.acked.Load(), q1.nUnconfirmed.Load(), overflow, val(overflow), refused, val(refused), val("spool_messages"), val("spool_bytes"), bound,
		val(`mqtt_events_total{event="upstream_refused"}`))
	if b := val("spool_bytes"); b > bound || b < bound/2 {
		t.Errorf("spool_bytes %v, want near the bound %d", b, bound)
	}
	if val(`mqtt_events_total{event="upstream_refused"}`) == 0 {
		t.Errorf("the site broker counted no refused upstream message")
	}
	if q1.acked.Load() == 0 {
		t.Fatalf("the QoS 1 device got nothing acknowledged")
	}
	got, acked, missing := m.recoverWAN(t, col, q1, "tank-2")
	t.Logf("after the WAN came back: central got %d QoS 0 messages of tank-1 (at most once: the rest dropped by the overflow policy or lost in the cut), %d QoS 1 of tank-2 (acked %d, %d unconfirmed after the refusal's disconnect, missing %d, in order %v)",
		len(col.seqs("tank-1")), len(got), acked, q1.nUnconfirmed.Load(), missing, firstArrivalsIncreasing(got))
	if missing > 0 || !firstArrivalsIncreasing(got) {
		t.Errorf("tank-2: %d acknowledged messages missing or out of order: %v", missing, got)
	}
}

// TestMqttDiskFull: the bridge's spool directory is a 256 KiB tmpfs and the
// WAN is dropped; a QoS 1 device fills the disk. The bridge refuses further
// messages for lack of space while keeping room to record the deliveries
// (spool_messages_dropped_total{reason="refused_disk"}), keeps running, and
// after the WAN is back drains the spool: every acknowledged message reaches
// the central application in order, and the space is reclaimed, so a device
// can publish again.
func TestMqttDiskFull(t *testing.T) {
	t.Parallel() // own namespaces and daemons
	testenv.RequireBinary(t, "mount")
	var spoolDir string
	// No byte rate limit: the devices fill the disk at 100-200 KB/s.
	m := setupMQTTWith(t, []string{"disk-1", "disk-2"}, "  publish_byte_rate: -1\n", func(m *mqttEnv) {
		spoolDir = filepath.Join(m.Dir, "bridge-state", "spool")
		if err := os.MkdirAll(spoolDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "fgspool", spoolDir).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		// Registered before the bridge starts: runs after it was stopped.
		t.Cleanup(func() {
			if out, err := exec.Command("umount", spoolDir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", spoolDir, err, out)
			}
		})
	})
	eps := []*Endpoint{m.Endpoint("disk-1"), m.Endpoint("disk-2")}
	m.waitCentralSessions(t, eps, 30*time.Second)
	col := m.startCollector(t)
	const refusedDisk = `spool_messages_dropped_total{reason="refused_disk"}`
	m.Topo.CutWAN(t)
	d := m.startDevicePad(t, eps[0], 1, 5*time.Millisecond, 1000)
	if !Poll(60*time.Second, func() bool { return m.metricOr(refusedDisk) > 0 }) {
		t.Fatalf("no refusal for disk space within 60s: %s %v, spool_bytes %v, spool_disk_bytes %v",
			refusedDisk, m.metricOr(refusedDisk), m.metricOr("spool_bytes"), m.metricOr("spool_disk_bytes"))
	}
	d.halt()
	d.c.Disconnect(0) // it would resend the refused message forever
	text := m.Metrics()
	val := func(series string) float64 {
		v, ok := MetricValue(text, series)
		if !ok {
			t.Fatalf("bridge /metrics has no %s", series)
		}
		return v
	}
	t.Logf("WAN down, 256 KiB disk: device acked %d (%d unconfirmed); %s %v, spool_messages %v, spool_disk_bytes %v, spool_write_errors_total %v, mqtt upstream_refused %v",
		d.acked.Load(), d.nUnconfirmed.Load(), refusedDisk, val(refusedDisk), val("spool_messages"), val("spool_disk_bytes"),
		val("spool_write_errors_total"), val(`mqtt_events_total{event="upstream_refused"}`))
	got, acked, missing := m.recoverWAN(t, col, d, "disk-1")
	t.Logf("after the WAN came back: central got %d of disk-1 (acked %d, missing %d, in order %v); spool_disk_bytes %v",
		len(got), acked, missing, firstArrivalsIncreasing(got), m.metricOr("spool_disk_bytes"))
	if missing > 0 || !firstArrivalsIncreasing(got) {
		t.Errorf("disk-1: %d acknowledged messages missing or out of order: %v", missing, got)
	}
	// The space came back: another device's messages are taken and relayed.
	d2 := m.startDevicePad(t, eps[1], 1, 10*time.Millisecond, 1000)
	if !Poll(30*time.Second, func() bool { return d2.lastConfirmed() >= 50 }) {
		t.Fatalf("after the drain a device got %d messages acknowledged, want 50; %s %v", d2.lastConfirmed(), refusedDisk, m.metricOr(refusedDisk))
	}
	d2.halt()
	if !Poll(30*time.Second, func() bool {
		s := col.seqs("disk-2")
		return len(s) > 0 && slices.Max(s) >= d2.lastConfirmed()
	}) {
		t.Fatalf("central got disk-2 %v, want up to %d", col.seqs("disk-2"), d2.lastConfirmed())
	}
	t.Logf("after the drain disk-2 got %d acknowledged and relayed", d2.lastConfirmed())
}
