package chain

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
)

// centralMQTTPort is the central broker's port (plain MQTT inside the VPN).
const centralMQTTPort = 1883

// telemetryHook feeds every publish on the central broker to the collector,
// labelled with the publishing connection's remote address (the endpoint's
// own VPN address when the bridge relays it).
type telemetryHook struct {
	mochi.HookBase
	col      *collector.Collector
	onSample func(name, from string)
}

func (h *telemetryHook) ID() string { return "fleetgate-demo-telemetry" }

func (h *telemetryHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnPublish}, []byte{b})
}

func (h *telemetryHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	t, err := h.col.Handle("mqtt", pk.TopicName, pk.Payload, collector.DetectFormat(pk.Payload))
	if err == nil {
		from := cl.Net.Remote
		if ap, err := netip.ParseAddrPort(from); err == nil {
			from = ap.Addr().String()
		}
		h.onSample(t.Device, from)
	}
	return pk, nil
}

// startCentralBroker runs a mochi broker on the gateway's userspace stack.
func startCentralBroker(g *gateway, col *collector.Collector, onSample func(name, from string), log *slog.Logger) (*mochi.Server, error) {
	l, err := g.stack.ListenTCP(netip.AddrPortFrom(netip.MustParseAddr(centralAddr), centralMQTTPort))
	if err != nil {
		return nil, fmt.Errorf("demo: central broker listen: %w", err)
	}
	b := mochi.New(&mochi.Options{InlineClient: false, Logger: log})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := b.AddHook(&telemetryHook{col: col, onSample: onSample}, nil); err != nil {
		return nil, err
	}
	if err := b.AddListener(listeners.NewNet("central-vpn", l)); err != nil {
		return nil, err
	}
	if err := b.Serve(); err != nil {
		return nil, err
	}
	return b, nil
}
