package chain

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/bridge/mqttrelay"
	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/device"
	dlmqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
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

// siteMQTT is the bridge's MQTT side: site broker + relay + spool.
type siteMQTT struct {
	broker *dlmqtt.Broker
	relay  *mqttrelay.Relay
	sp     *spool.Spool
	addr   net.Addr
}

func startSiteMQTT(b *bridge, reg *device.Registry, dir string, tlsCfg *tls.Config, log *slog.Logger) (*siteMQTT, error) {
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), Logger: log.With("component", "spool")})
	if err != nil {
		return nil, fmt.Errorf("demo: spool: %w", err)
	}
	s := &siteMQTT{sp: sp}
	var br *dlmqtt.Broker
	r, err := mqttrelay.New(mqttrelay.Config{
		Site: demoSite, Server: netip.AddrPortFrom(netip.MustParseAddr(centralAddr), centralMQTTPort),
		Dial: b.stack.DialTCP,
		AddrOf: func(ep string) (netip.Addr, bool) {
			e, ok := reg.ByName(ep)
			return e.Addr, ok
		},
		Spool: sp,
		Downlink: downlinkFunc(func(ep, topic string, p []byte, q byte, ret bool) error {
			return br.Deliver(ep, topic, p, q, ret)
		}),
		BackoffMin: 100 * time.Millisecond, BackoffMax: 2 * time.Second,
		Logger: log.With("component", "mqttrelay"),
	})
	if err != nil {
		_ = sp.Close()
		return nil, fmt.Errorf("demo: relay: %w", err)
	}
	s.relay = r
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = r.Close()
		_ = sp.Close()
		return nil, err
	}
	s.addr = l.Addr()
	br, err = dlmqtt.New(dlmqtt.Config{
		TLSListener: l, TLS: tlsCfg, Auth: dlmqtt.RegistryAuth{Registry: reg}, Upstream: r,
		Logger: log.With("component", "downlink-mqtt"),
	})
	if err != nil {
		_ = l.Close()
		_ = r.Close()
		_ = sp.Close()
		return nil, fmt.Errorf("demo: site broker: %w", err)
	}
	s.broker = br
	if err := br.Start(); err != nil {
		s.close()
		return nil, fmt.Errorf("demo: site broker: %w", err)
	}
	if err := r.Start(); err != nil {
		s.close()
		return nil, fmt.Errorf("demo: relay: %w", err)
	}
	return s, nil
}

func (s *siteMQTT) close() {
	if s.broker != nil {
		_ = s.broker.Close()
	}
	_ = s.relay.Close()
	_ = s.sp.Close()
}

type downlinkFunc func(ep, topic string, p []byte, q byte, ret bool) error

func (f downlinkFunc) Deliver(ep, topic string, p []byte, q byte, ret bool) error {
	return f(ep, topic, p, q, ret)
}
