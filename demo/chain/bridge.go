package chain

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/ipstack"
	"github.com/fleetgate/fleetgate/uplink"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// bridge is the edge bridge's uplink half: the uplink client and the
// userspace stack holding the PPP address and the endpoint addresses.
type bridge struct {
	client *uplink.Client
	stack  *ipstack.Stack
	up     chan struct{}
}

// startBridge dials the gateway and waits until the uplink is up; onState
// sees every state change.
func startBridge(ctx context.Context, g *gateway, log *slog.Logger, onState func(uplink.Status)) (*bridge, error) {
	b := &bridge{up: make(chan struct{})}
	var out atomic.Pointer[uplink.Client]
	st, err := ipstack.New(ipstack.Config{
		Output: func(pkt []byte) error {
			c := out.Load()
			if c == nil {
				return uplink.ErrDown
			}
			return c.WritePacket(pkt)
		},
		Logger: log.With("component", "bridge-stack"),
	})
	if err != nil {
		return nil, fmt.Errorf("demo: bridge stack: %w", err)
	}
	b.stack = st
	ts := g.eng.Tunnel()
	upOnce := false
	client, err := uplink.New(uplink.Config{
		Gateways: []uplink.Gateway{{Addr: ts.IKEAddr().String(), NATTPort: ts.NATTAddr().Port()}},
		Tunnel: tunnel.ClientConfig{
			LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
			PSK:      []byte(demoPSK),
			LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(demoSite + ".sites.example")},
			Username: demoSite, Password: demoPassword,
		},
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second,
		OnState: func(s uplink.Status) {
			if onState != nil {
				onState(s)
			}
			if s.State == uplink.StateUp && s.Addr.IsValid() && !upOnce {
				upOnce = true
				_ = st.AddAddress(netip.PrefixFrom(s.Addr, 32))
				close(b.up)
			}
		},
		Logger: log.With("component", "uplink"),
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("demo: uplink: %w", err)
	}
	b.client = client
	out.Store(client)
	client.SetPacketHandler(func(pkt []byte) { _ = st.InjectInbound(pkt) })
	client.Start()
	select {
	case <-b.up:
	case <-ctx.Done():
		b.close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		s := client.Status()
		b.close()
		return nil, fmt.Errorf("demo: uplink not up after 30s (phase %v: %v)", s.LastPhase, s.LastErr)
	}
	return b, nil
}

// addEndpoint gives the bridge stack endpoint address a.
func (b *bridge) addEndpoint(a netip.Addr) error {
	return b.stack.AddAddress(netip.PrefixFrom(a, 32))
}

func (b *bridge) close() {
	_ = b.client.Close()
	b.stack.Close()
}
