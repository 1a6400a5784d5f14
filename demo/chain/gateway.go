// Package chain runs the whole fleetgate chain in one process for the
// one-command demo (`make demo`): a central gateway (gateway/server with the
// real IKEv1/ESP/L2TP/PPP engine, userspace data plane), an edge bridge
// (uplink client over loopback UDP, userspace IP stack holding the site's
// endpoint addresses) and central services inside the gateway's stack.
package chain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/ipstack"
)

// Demo identity and addressing (TEST-NET/10.x only; PSK is a demo value).
const (
	demoPSK      = "fleetgate-demo-psk"
	demoSite     = "hall7"
	demoPassword = "hall7-demo-password"
	sitePrefix   = "10.10.8.0/24"
	centralAddr  = "10.20.0.10"
	// IPv6 (Options.IPv6): the site's /64 (the identity's ipv6_prefix and
	// the bridge's) and central's IPv6 address in the gateway's stack.
	sitePrefix6  = "2001:db8:8::/64"
	centralAddr6 = "2001:db8:200::10"
)

// gatewayYAML is the embedded gateway configuration: userspace data plane,
// one central service address, one site identity with a framed route.
const gatewayYAML = `
psk: {shared: %s}
pool: {prefix: 10.10.0.0/24}
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [%s/32]}
policies:
  sensors:
    allow:
      - {dst: %s}
identities:
  - {name: %s, ppp: {password: %s}, routes: [%s], policy: sensors%s}
`

// gateway is the running central gateway.
type gateway struct {
	srv   *server.Server
	eng   *engine.Engine
	stack *ipstack.Stack
	// central is the central services' address (IPv6 with Options.IPv6).
	central netip.Addr
	v6      bool
	ike     net.PacketConn
	natt    net.PacketConn
	done    chan error
}

// startGateway starts the demo gateway; with v6 it listens on ::1 only
// (the outer network is IPv6), offers IPV6CP with the site's IPv6 prefix
// and holds central's IPv6 address.
func startGateway(ctx context.Context, log *slog.Logger, v6 bool) (*gateway, error) {
	allow, id6, listen := centralAddr+"/32", "", "127.0.0.1:0"
	if v6 {
		allow += "}\n      - {dst: " + centralAddr6 + "/128"
		id6, listen = ", ipv6_prefix: \""+sitePrefix6+"\"", "[::1]:0"
	}
	cfg, err := config.Parse("demo-gateway.yaml", fmt.Appendf(nil, gatewayYAML,
		demoPSK, centralAddr, allow, demoSite, demoPassword, sitePrefix, id6))
	if err != nil {
		return nil, fmt.Errorf("demo: gateway config: %w", err)
	}
	ikeC, err := net.ListenPacket("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("demo: IKE socket: %w", err)
	}
	nattC, err := net.ListenPacket("udp", listen)
	if err != nil {
		_ = ikeC.Close()
		return nil, fmt.Errorf("demo: NAT-T socket: %w", err)
	}
	eng := engine.New(engine.Config{IKEConn: ikeC, NATTConn: nattC, Logger: log.With("component", "gateway-engine")})
	srv, err := server.New(cfg, server.Options{Engine: eng})
	if err != nil {
		_ = ikeC.Close()
		_ = nattC.Close()
		return nil, fmt.Errorf("demo: gateway: %w", err)
	}
	g := &gateway{srv: srv, eng: eng, ike: ikeC, natt: nattC, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	select {
	case <-eng.Ready():
	case err := <-g.done:
		return nil, fmt.Errorf("demo: gateway stopped before ready: %v", err)
	case <-time.After(15 * time.Second):
		return nil, errors.New("demo: gateway engine not ready after 15s")
	}
	// The host is opened by Run; the engine is ready after it.
	us, ok := srv.Host().(*dataplane.Userspace)
	if !ok {
		return nil, fmt.Errorf("demo: gateway host is %T, not the userspace data plane", srv.Host())
	}
	g.stack = us.Stack()
	g.central, g.v6 = netip.MustParseAddr(centralAddr), v6
	if v6 {
		// The gateway config's dataplane.addresses are IPv4 only.
		g.central = netip.MustParseAddr(centralAddr6)
		if err := g.stack.AddAddress(netip.PrefixFrom(g.central, 128)); err != nil {
			return nil, fmt.Errorf("demo: central IPv6 address: %w", err)
		}
	}
	return g, nil
}

// wait waits for the gateway's Run to return after ctx was cancelled.
func (g *gateway) wait(d time.Duration) error {
	select {
	case err := <-g.done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(d):
		return errors.New("demo: gateway did not stop in time")
	}
}
