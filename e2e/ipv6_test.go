package e2e

// The IPv6-only outer network (Options.IPv6Outer) and its end-to-end test:
//
//	sensors 172.16.1.2 — edge 172.16.1.1 / 2001:db8:1::2 — wan (IPv6 only,
//	  forwarding) — gw 2001:db8:2::2 (gateway on ::, TUN fg0, IPv4 pool
//	  10.10.0.0/24, framed route 10.10.8.0/24 and ipv6_prefix 2001:db8:8::/64
//	  → the bridge) — central 10.200.0.2 and 2001:db8:200::10
//
// There is no NAT host and no IPv4 address on the WAN links: the bridge can
// only reach the gateway over IPv6. The site LAN stays IPv4 (sensors dial
// the bridge at BridgeLAN as in the IPv4 topology).

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Addresses of the IPv6 outer topology.
var (
	// SitePrefix6 is the site's IPv6 prefix: the gateway identity's and
	// the bridge's ipv6_prefix.
	SitePrefix6 = netip.MustParsePrefix("2001:db8:8::/64")
	// GatewayPublic6 is the gateway's address on the IPv6 WAN.
	GatewayPublic6 = netip.MustParseAddr("2001:db8:2::2")
	// CentralAddr6 is central's IPv6 address (behind gw).
	CentralAddr6 = netip.MustParseAddr("2001:db8:200::10")
	// edgeWAN6 is the bridge host's WAN address.
	edgeWAN6 = netip.MustParseAddr("2001:db8:1::2")
)

const (
	// ipv6PolicyRule lets the site reach central's IPv6 network (policy
	// "central" of gatewayConfig).
	ipv6PolicyRule = "      - {dst: \"2001:db8:200::/64\"}\n"
	// ipv6IdentityKey gives the site identity its IPv6 prefix (IPV6CP).
	ipv6IdentityKey = "    ipv6_prefix: \"2001:db8:8::/64\"\n"
)

// ipv6Outer turns netns.New's NAT-less topology into the IPv6-only WAN:
// IPv6 on edge — wan — gw — central, IPv4 removed from the WAN links,
// IPv6 forwarding on wan and gw, default routes over IPv6.
func (e *Env) ipv6Outer() {
	e.T.Helper()
	topo := e.Topo
	for _, a := range []struct{ host, iface, prefix string }{
		{"edge", "wan", "2001:db8:1::2/64"}, {"wan", "edge", "2001:db8:1::1/64"},
		{"wan", "gw", "2001:db8:2::1/64"}, {"gw", "wan", "2001:db8:2::2/64"},
		{"gw", "central", "2001:db8:200::1/64"}, {"central", "gw", "2001:db8:200::10/64"},
	} {
		topo.AddAddr(a.host, a.iface, a.prefix)
	}
	// The WAN links lose their IPv4 addresses (gw — central keeps both).
	for _, a := range []struct{ host, iface, prefix string }{
		{"edge", "wan", "2001:db8:1::2/64"}, {"wan", "edge", "2001:db8:1::1/64"},
		{"wan", "gw", "2001:db8:2::1/64"}, {"gw", "wan", "2001:db8:2::2/64"},
	} {
		h := topo.Host(a.host)
		e.mustRun(h, "ip", "-4", "addr", "flush", "dev", a.iface)
		h.Ifaces[a.iface] = netip.MustParsePrefix(a.prefix)
	}
	for _, h := range []string{"wan", "gw"} {
		e.mustRun(topo.Host(h), "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	}
	e.mustRun(e.Edge, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
	e.mustRun(e.GW, "ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	e.mustRun(e.Central, "ip", "-6", "route", "add", "default", "via", "2001:db8:200::1")
	e.Edge.Addr, e.GW.Addr = edgeWAN6, GatewayPublic6
	// Nothing IPv4 is left between the site and the gateway.
	if out := e.mustRun(e.Edge, "ip", "-4", "route", "show"); strings.Contains(out, "default") {
		e.T.Fatalf("e2e: edge still has an IPv4 default route: %s", out)
	}
}

// addr6Of is an endpoint's IPv6 address in SitePrefix6: its IPv4 host
// number written in decimal, read as hex (10.10.8.17 → 2001:db8:8::17).
func addr6Of(t *testing.T, a netip.Addr) netip.Addr {
	t.Helper()
	iid, err := strconv.ParseUint(strconv.Itoa(int(a.As4()[3])), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	b := SitePrefix6.Addr().As16()
	b[14], b[15] = byte(iid>>8), byte(iid)
	return netip.AddrFrom16(b)
}

// TestIPv6OuterEndToEnd: the real bridge reaches the real gateway over an
// IPv6-only WAN (IKE, ESP over NAT-T port 4500 on IPv6), gets IPv4 by IPCP
// and the site's IPv6 prefix routed by IPV6CP (the gateway's /status
// session: outer [2001:db8:1::2]:…, vpn_addr in the pool, ipv6_prefix;
// gw's kernel routes 2001:db8:8::/64 into the TUN); central, a kernel host
// behind the gateway's TUN data plane, reaches a DTLS sensor at its IPv6
// address with libcoap's coap-client and gets the device's answer, sees
// the device's own CoAP from that address, and a Mosquitto on central's
// IPv6 address sees the MQTT device's relay session and telemetry from the
// device's IPv6 address.
func TestIPv6OuterEndToEnd(t *testing.T) {
	t.Parallel() // own namespaces and daemons
	for _, b := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub", "stdbuf", "coap-client-notls"} {
		testenv.RequireBinary(t, b)
	}
	Bin(t, "bridge") // built once per test binary; not this test's time
	t0 := time.Now()
	env := Setup(t, Options{IPv6Outer: true, NoStart: true,
		Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "pump-4", Protocol: "mqtt"}},
		BridgeYAML: fmt.Sprintf("mqtt:\n  enabled: true\n  tls_listen: \"%s:%d\"\n  central: %q\n  central_tls: false\n",
			BridgeLAN, MQTTSPort, netip.AddrPortFrom(CentralAddr6, 1883).String())})
	// Central's broker listens on its IPv6 address only.
	broker := realpeer.StartMosquitto(t, env.Central, realpeer.MosquittoConfig{Listen: netip.AddrPortFrom(CentralAddr6, 1883)})
	pc, err := env.Central.ListenPacket("udp6", netip.AddrPortFrom(CentralAddr6, 5683).String())
	if err != nil {
		t.Fatal(err)
	}
	sink := &coapSink{pc: pc}
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); sink.serve() }()
	t.Cleanup(func() { pc.Close(); <-sinkDone })
	t1 := time.Now()
	env.StartGateway()
	env.StartBridge()
	st := env.WaitUplinkUp(60 * time.Second)
	t2 := time.Now()

	// The gateway's session: over IPv6 from edge, IPv4 from the pool,
	// the site's IPv6 prefix; gw routes it into the TUN.
	type gwStatus struct {
		Sessions []struct {
			Outer      string `json:"outer"`
			VPNAddr    string `json:"vpn_addr"`
			IPv6Prefix string `json:"ipv6_prefix"`
		} `json:"sessions"`
	}
	var sess string
	if !Poll(30*time.Second, func() bool {
		var r gwStatus
		if json.Unmarshal(env.get(env.GW, gatewayHTTP, "/status"), &r) != nil {
			return false
		}
		for _, s := range r.Sessions {
			a, err := netip.ParseAddr(s.VPNAddr)
			if err == nil && PoolPrefix.Contains(a) && s.IPv6Prefix == SitePrefix6.String() && strings.HasPrefix(s.Outer, "["+edgeWAN6.String()+"]:") {
				sess = fmt.Sprintf("outer %s vpn_addr %s ipv6_prefix %s", s.Outer, s.VPNAddr, s.IPv6Prefix)
				return true
			}
		}
		return false
	}) {
		t.Fatalf("gateway /status: no session from [%s] with an IPv4 in %s and ipv6_prefix %s:\n%s", edgeWAN6, PoolPrefix, SitePrefix6, env.get(env.GW, gatewayHTTP, "/status"))
	}
	routes6 := env.mustRun(env.GW, "ip", "-6", "route", "show", "dev", "fg0")
	if !strings.Contains(routes6, SitePrefix6.String()) {
		t.Fatalf("gw IPv6 routes on fg0: %q, want %s", routes6, SitePrefix6)
	}
	t.Logf("uplink %s; gateway session: %s; gw fg0: %s", st.Uplink, sess, strings.TrimSpace(routes6))

	// CoAP: the device talks first (its POST to central leaves from its
	// IPv6 address), then central GETs it at that address.
	ep := env.Endpoint("sensor-17")
	a6 := addr6Of(t, ep.Addr)
	d := dialDevice(t, env, ep, nil, coapAnswer(ep.Name))
	code, body := d.post(t, "/hello/"+ep.Name, "boot")
	if code != codes.Content || !strings.HasPrefix(body, "src=["+a6.String()+"]:") {
		t.Fatalf("%s → central [%s]:5683: %v %q, want 2.05 from [%s]", ep.Name, CentralAddr6, code, body, a6)
	}
	if got, ok := sink.find("/hello/" + ep.Name); !ok || got.From.Addr() != a6 {
		t.Fatalf("central CoAP sink saw %+v (found %v), want source %s", got, ok, a6)
	}
	out, err := realpeer.CoAPClient(t.Context(), env.Central, realpeer.CoAPRequest{
		Backend: "notls", URI: fmt.Sprintf("coap://[%s]/temp", a6), Timeout: 15 * time.Second})
	if want := ep.Name + " /temp"; err != nil || !strings.Contains(out, want) {
		t.Fatalf("central coap-client GET coap://[%s]/temp: %v %q, want %q", a6, err, out, want)
	}
	t.Logf("device POST answered %q; central GET coap://[%s]/temp → %q", body, a6, strings.TrimSpace(out))

	// MQTT: the device's relay session and its telemetry reach central's
	// broker from the device's IPv6 address.
	pump := env.Endpoint("pump-4")
	p6 := addr6Of(t, pump.Addr)
	sub := broker.Subscribe(t, env.Central, "sites/plant-a/#", "-q", "1")
	args := []string{"-h", BridgeLAN.String(), "-p", strconv.Itoa(MQTTSPort), "--cafile", env.Dir + "/bridge-state/ca/ca.pem",
		"-i", pump.Name, "-u", pump.Identity, "-P", pump.PSK, "-q", "1", "-t", "telemetry/flow", "-m", "7.5"}
	if out, err := env.Sensors.Run(env.Context(20*time.Second), "mosquitto_pub", args...); err != nil {
		t.Fatalf("device %s: mosquitto_pub: %v\n%s", pump.Name, err, out)
	}
	want := "sites/plant-a/" + pump.Name + "/telemetry/flow 7.5"
	if got := sub.Wait(t, 1, 30*time.Second); got[0] != want {
		t.Fatalf("central mosquitto_sub got %q, want %q", got, want)
	}
	re := regexp.MustCompile(`New client connected from ` + regexp.QuoteMeta(p6.String()) + `:\d+ as ` + regexp.QuoteMeta(siteName+"/"+pump.Name) + ` .*`)
	line := re.FindString(broker.Proc.Output())
	if line == "" {
		t.Fatalf("central mosquitto log shows no %s session from %s:\n%s", pump.Name, p6, broker.Proc.Output())
	}
	// The broker's TCP peer is the device's IPv6 address (kernel view).
	var conns string
	if !Poll(10*time.Second, func() bool {
		conns = env.mustRun(env.Central, "ss", "-Htn", "state", "established", "( sport = :1883 )")
		return strings.Contains(conns, "["+p6.String()+"]:")
	}) {
		t.Fatalf("central ss: no MQTT connection from [%s]: %q", p6, conns)
	}
	t.Logf("central mosquitto: %s; telemetry %q; ss: %s", line, want, strings.Join(strings.Fields(conns), " "))
	if n := strings.Count(broker.Proc.Output(), "New client connected from 10."); n != 0 {
		t.Fatalf("central mosquitto saw %d IPv4 relay sessions, want 0", n)
	}
	t.Logf("took %v: topology+configs+endpoints+broker %v, gateway+bridge+uplink %v, checks %v", time.Since(t0).Round(time.Millisecond),
		t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
}
