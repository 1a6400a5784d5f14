package chain

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	simdevice "github.com/fleetgate/fleetgate/firmware-sim/device"
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
	// onReply sees device command replies (…/status/cmd/…).
	onReply func(topic string, payload []byte, from string)
}

func (h *telemetryHook) ID() string { return "fleetgate-demo-telemetry" }

func (h *telemetryHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnPublish}, []byte{b})
}

func (h *telemetryHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	from := cl.Net.Remote
	if ap, err := netip.ParseAddrPort(from); err == nil {
		from = ap.Addr().String()
	}
	switch {
	case strings.Contains(pk.TopicName, "/telemetry/"):
		if t, err := h.col.Handle("mqtt", pk.TopicName, pk.Payload, collector.DetectFormat(pk.Payload)); err == nil {
			h.onSample(t.Device, from)
		}
	case strings.Contains(pk.TopicName, "/status/cmd/") && h.onReply != nil:
		h.onReply(pk.TopicName, pk.Payload, from)
	}
	return pk, nil
}

// MQTTCommand is the central → device MQTT command result: published on
// the central broker, relayed by the bridge into the endpoint's cmd/…
// topic, answered by the device on status/cmd/…, relayed back.
type MQTTCommand struct {
	Target string `json:"target"`
	Topic  string `json:"topic"`
	OK     bool   `json:"ok"`
	// Sent counts publishes (repeated until a reply arrives).
	Sent  int           `json:"sent"`
	RTT   time.Duration `json:"rtt_ns"`
	Reply string        `json:"reply"`
	// From is the reply's source: the endpoint's own VPN address.
	From string `json:"from,omitempty"`
}

// commandLoop waits for target's first telemetry, then publishes a
// command on the central broker every 2 s until the device's reply
// arrives or ctx ends.
func commandLoop(ctx context.Context, cb *mochi.Server, st *state, target registry.Endpoint, replies <-chan commandReply) {
	topic := fmt.Sprintf("sites/%s/%s/cmd/ping", demoSite, target.Name)
	st.mu.Lock()
	st.cmd = MQTTCommand{Target: fmt.Sprintf("%s (%s)", target.Name, target.Addr), Topic: topic, Reply: "waiting for the device's first telemetry"}
	st.mu.Unlock()
	if !target.Addr.IsValid() {
		st.mu.Lock()
		st.cmd = MQTTCommand{Reply: "no MQTT endpoint in the fleet"}
		st.mu.Unlock()
		return
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var sentAt time.Time
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-replies:
			if sentAt.IsZero() || !strings.HasPrefix(r.topic, "sites/"+demoSite+"/"+target.Name+"/") {
				continue
			}
			var rep simdevice.CommandReply
			if err := json.Unmarshal(r.payload, &rep); err != nil {
				st.mu.Lock()
				st.cmd.Reply = "bad reply: " + err.Error()
				st.mu.Unlock()
				continue
			}
			st.mu.Lock()
			st.cmd.OK, st.cmd.RTT, st.cmd.From = true, time.Since(sentAt), r.from
			st.cmd.Reply = fmt.Sprintf("%s answered %q on %s", rep.Device, rep.Payload, r.topic)
			st.mu.Unlock()
			return
		case <-t.C:
		}
		st.mu.Lock()
		e := st.eps[target.Name]
		ready := e != nil && e.Messages > 0
		st.mu.Unlock()
		if !ready || (!sentAt.IsZero() && time.Since(sentAt) < 2*time.Second) {
			continue
		}
		n++
		// QoS 1 from the broker's inline client; if the relay had not
		// subscribed yet nobody gets it, and it is sent again.
		if err := cb.Publish(topic, fmt.Appendf(nil, "ping %d from central", n), false, 1); err != nil {
			st.mu.Lock()
			st.cmd.Reply = "publish: " + err.Error()
			st.mu.Unlock()
			continue
		}
		sentAt = time.Now()
		st.mu.Lock()
		st.cmd.Sent = n
		st.cmd.Reply = "sent, waiting for the reply"
		st.mu.Unlock()
	}
}

type commandReply struct {
	topic   string
	payload []byte
	from    string
}

// startCentralBroker runs a mochi broker on the gateway's userspace stack.
func startCentralBroker(g *gateway, col *collector.Collector, onSample func(name, from string), replies chan<- commandReply, log *slog.Logger) (*mochi.Server, error) {
	l, err := g.stack.ListenTCP(netip.AddrPortFrom(g.central, centralMQTTPort))
	if err != nil {
		return nil, fmt.Errorf("demo: central broker listen: %w", err)
	}
	// The inline client publishes the demo's central → device command.
	b := mochi.New(&mochi.Options{InlineClient: true, Logger: log})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := b.AddHook(&telemetryHook{col: col, onSample: onSample, onReply: func(topic string, p []byte, from string) {
		select {
		case replies <- commandReply{topic, append([]byte(nil), p...), from}:
		default:
		}
	}}, nil); err != nil {
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
