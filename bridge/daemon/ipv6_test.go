package daemon_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// gwYAML6: gwYAML with the site's IPv6 prefix (IPV6CP offered) and the
// central IPv6 address allowed by policy.
const gwYAML6 = `
psk: {shared: ` + gwPSK + `}
pool: {prefix: 10.10.0.0/24}
push_routes: [10.20.0.0/16]
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [10.20.0.1/32]}
policies:
  central:
    allow:
      - {dst: 10.20.0.1/32}
      - {dst: 2001:db8:200::10/128}
identities:
  - {name: plant-a, ppp: {password: pw-a}, routes: [10.10.8.0/24], ipv6_prefix: "2001:db8:8::/64", policy: central}
`

// TestLoopbackIPv6: the real gateway (userspace data plane) and the bridge
// daemon over an IPv6 outer network (both on ::1 only: IKE, NAT-T ESP),
// IPCP and IPV6CP on the PPP link; central at 2001:db8:200::10 reaches
// sensor-17 at its IPv6 address 2001:db8:8::17 with CoAP, the device's
// POST and the MQTT endpoint pump-4's telemetry arrive at central from
// the endpoints' IPv6 addresses (asserted at the central CoAP sink and
// broker), and the MQTT device reaches the bridge over IPv6 ([::1]).
func TestLoopbackIPv6(t *testing.T) {
	stacktest.CheckGoroutines(t)
	gw, eng, central := startGatewayWith(t, gwYAML6, "::1")
	// The central stack's IPv6 address (gateway config takes IPv4 only).
	if err := central.AddAddress(netip.MustParsePrefix("2001:db8:200::10/128")); err != nil {
		t.Fatal(err)
	}
	sink, err := central.ListenUDP(netip.MustParseAddrPort("[2001:db8:200::10]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	coaptest.Serve(t, sink, coaptest.SourceEcho)
	got := centralBrokerAt(t, central, netip.MustParseAddrPort("[2001:db8:200::10]:1883"))

	ts := eng.Tunnel()
	if !ts.IKEAddr().Addr().Is6() {
		t.Fatalf("gateway IKE on %s, want IPv6", ts.IKEAddr())
	}
	cfg := siteConfig(t, ts, siteNet{central: "[2001:db8:200::10]", coapListen: "[::]", mqttListen: "[::1]",
		extra: "ipv6_prefix: 2001:db8:8::/64\n"})
	prov, mprov := provisionSite(t, cfg)
	if want := netip.MustParseAddr("2001:db8:8::17"); prov.Endpoint.Addr6 != want {
		t.Fatalf("sensor-17 IPv6 address %s, want %s", prov.Endpoint.Addr6, want)
	}
	a, status, _ := runBridge(t, cfg, daemon.Options{})
	waitFor(t, "uplink up", func() bool { return strings.HasPrefix(status().Uplink, "up") })
	// The bridge's own status says IPV6CP is up (the operator's view, not
	// only the gateway's).
	waitFor(t, "IPV6CP up in the bridge's status", func() bool {
		return strings.Contains(status().Uplink, " ipv6cp=up link_local6=fe80::")
	})
	// The gateway's session: outer over IPv6, the site's IPv6 prefix
	// routed to it (IPV6CP; IPv6 sent before it opened is retransmitted
	// by CoAP and TCP below).
	waitFor(t, "gateway session over IPv6 with the site's IPv6 prefix", func() bool {
		for _, s := range gw.Report().Sessions {
			if s.IPv6Prefix == "2001:db8:8::/64" && strings.HasPrefix(s.Outer, "[::1]:") {
				return true
			}
		}
		return false
	})

	// The DTLS listener is on [::] (both families); coaptest's device
	// socket is IPv4.
	d := echoDevice(t, fmt.Sprintf("127.0.0.1:%d", a.CoAP.(*net.UDPAddr).Port), prov)
	postFrom(t, d, "21.5", "[2001:db8:8::17]")

	c, err := central.DialUDP(netip.MustParseAddrPort("[2001:db8:200::10]:0"), netip.MustParseAddrPort("[2001:db8:8::17]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if code, body := coapGet(t, c, "/temp"); code != codes.Content || body != "device/temp" {
		t.Fatalf("central → [2001:db8:8::17]:5683: got %v %q, want 2.05 device/temp", code, body)
	}

	// The MQTT device reaches the bridge over IPv6 ([::1]).
	mqttTelemetry(t, a.MQTTPlain.String(), mprov, got, "[2001:db8:8::4]")
	for _, e := range status().Endpoints {
		if e.Name == "sensor-17" && e.Addr6 != "2001:db8:8::17" {
			t.Errorf("status: sensor-17 addr6 %q, want 2001:db8:8::17", e.Addr6)
		}
	}
}
