package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// DefaultTopic is the central filter for device telemetry: the bridge's MQTT
// relay republishes a device's "telemetry/..." topic as
// "sites/<site>/<endpoint>/telemetry/..." on the central broker. The
// collector takes the device name from the SenML base name, not the topic.
const DefaultTopic = "sites/+/+/telemetry/#"

// MQTTConfig describes the central broker subscription.
type MQTTConfig struct {
	// Broker is a paho URL: tcp://host:1883, ssl://host:8883.
	Broker string
	// Topic is the subscription filter, default DefaultTopic.
	Topic string
	// ClientID defaults to "fleetgate-collector".
	ClientID string
	// Username and Password authenticate to the broker, if set.
	Username, Password string
	// TLS configures ssl:// brokers.
	TLS *tls.Config
}

// DetectFormat guesses the SenML representation of an MQTT payload (MQTT
// 3.1.1 has no content type): a JSON pack starts with "[" (after
// whitespace), a CBOR pack with an array head (major type 4).
func DetectFormat(b []byte) senml.Format {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '[':
			return senml.FormatJSON
		}
		break
	}
	return senml.FormatCBOR
}

// SubscribeMQTT connects to the broker, subscribes with QoS 1 and feeds
// every message to Handle until ctx ends. It returns once the subscription
// is active (or failed); the client disconnects when ctx ends.
func (c *Collector) SubscribeMQTT(ctx context.Context, cfg MQTTConfig) error {
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "fleetgate-collector"
	}
	o := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(false)
	if cfg.Username != "" {
		o.SetUsername(cfg.Username).SetPassword(cfg.Password)
	}
	if cfg.TLS != nil {
		o.SetTLSConfig(cfg.TLS)
	}
	handler := func(_ paho.Client, m paho.Message) {
		_, _ = c.Handle("mqtt", m.Topic(), m.Payload(), DetectFormat(m.Payload()))
	}
	o.SetOnConnectHandler(func(cl paho.Client) {
		// Resubscribe after an automatic reconnect (clean session).
		cl.Subscribe(cfg.Topic, 1, handler)
	})
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		cl.Disconnect(0)
		return errors.New("collector: mqtt connect timed out")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("collector: mqtt connect: %w", err)
	}
	// The on-connect handler subscribes asynchronously; subscribe once more
	// synchronously so that the caller knows the subscription is active.
	st := cl.Subscribe(cfg.Topic, 1, handler)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		cl.Disconnect(0)
		return fmt.Errorf("collector: mqtt subscribe %q: %v", cfg.Topic, st.Error())
	}
	go func() {
		<-ctx.Done()
		cl.Disconnect(250)
	}()
	return nil
}
