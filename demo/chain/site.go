package chain

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/bridge/uplink"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
)

// siteYAML is the edge bridge's configuration: the same file format and
// composition (bridge/daemon.Site) as the `bridge` daemon, with every
// listener on an ephemeral loopback port and the uplink dialling the
// demo gateway over loopback UDP.
const siteYAML = `site: %s
prefix: %s
state_dir: %s
downlink: {coap_listen: "%s"}
central_coap: "%s"
http_listen: "127.0.0.1:0"
mqtt: {enabled: true, tls_listen: "%s", central: "%s"}
uplink:
  mode: l2tp-ipsec
  gateways: [%q]
  nat_t_port: %d
  psk: %s
  local_id: %s.sites.example
  ppp_user: %s
  ppp_password: %s
  min_backoff: 200ms
  max_backoff: 5s
%s`

// siteConfig returns the bridge configuration for the demo gateway g.
func siteConfig(g *gateway, dir string) (*bconfig.Config, error) {
	ts := g.eng.Tunnel()
	lan, v6 := "127.0.0.1:0", ""
	if g.v6 {
		// Sensors reach the bridge over IPv6 on the site LAN too.
		lan, v6 = "[::1]:0", "ipv6_prefix: "+sitePrefix6+"\n"
	}
	cfg, err := bconfig.Parse(fmt.Appendf(nil, siteYAML, demoSite, sitePrefix, dir,
		lan, netip.AddrPortFrom(g.central, centralCoAPPort), lan, netip.AddrPortFrom(g.central, centralMQTTPort),
		ts.IKEAddr().String(), ts.NATTAddr().Port(), demoPSK, demoSite, demoSite, demoPassword, v6))
	if err != nil {
		return nil, fmt.Errorf("demo: bridge config: %w", err)
	}
	return cfg, nil
}

// siteCA opens the bridge's site CA (created in the state directory on
// first use, as `bridge endpoint add` does) as a CA the simulated fleet
// can issue its device certificates from.
func siteCA(cfg *bconfig.Config) (*creds.CA, error) {
	_, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return nil, fmt.Errorf("demo: site CA: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(cfg.StateDir, "ca", "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("demo: site CA: %w", err)
	}
	return creds.ParseCA(ca.CertPEM, key)
}

// watchUplink records the uplink client's state changes as they happen
// (an event per change, so a tunnel that comes up within milliseconds still
// shows its connecting phase). Call it before site.Start.
func watchUplink(s *daemon.Site, st *state) {
	s.WatchUplink(func(cur uplink.Status) {
		if cur.State != uplink.StateIdle {
			st.onUplink(cur)
		}
	})
}

// waitUp waits until the uplink is up, ctx ends or 30 s pass.
func waitUp(ctx context.Context, s *daemon.Site) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, ok := s.UplinkStatus()
		if ok && cur.State == uplink.StateUp && cur.Addr.IsValid() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: uplink not up after 30s (phase %v: %v)", cur.LastPhase, cur.LastErr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
