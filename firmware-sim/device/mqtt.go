package device

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

const mqttTimeout = 10 * time.Second

type mqttSession struct {
	d     *Device
	cl    paho.Client
	topic string
	lost  chan struct{}
	once  sync.Once
	// replies tracks reply publishes waiting for their PUBACK.
	replies sync.WaitGroup
}

// CommandReply is what a simulated MQTT device publishes in answer to a
// command: on ReplyPrefix + the command's topic, QoS 1.
type CommandReply struct {
	Device string `json:"device"`
	// Command is the topic the command arrived on (device-relative
	// through the bridge, e.g. "cmd/ping").
	Command string `json:"command"`
	// Payload echoes the command's payload.
	Payload string `json:"payload"`
	// N is the device's command count including this one.
	N uint64 `json:"n"`
}

func (s *mqttSession) markLost() { s.once.Do(func() { close(s.lost) }) }

// mqttPassword returns the MQTT username and password for the device's
// credentials: KindMQTT as given; KindPSK uses the key as the password
// (as text when it is printable, as the bridge provisions it, else its
// hex); KindCert has no password.
func mqttPassword(e *creds.Entry) (string, string) {
	switch e.Kind {
	case creds.KindMQTT:
		return e.Identity, string(e.Secret)
	case creds.KindPSK:
		for _, c := range e.Secret {
			if c < '!' || c > '~' {
				return e.Identity, hex.EncodeToString(e.Secret)
			}
		}
		return e.Identity, string(e.Secret)
	}
	return e.Identity, ""
}

func (d *Device) dialMQTT(ctx context.Context) (session, error) {
	s := &mqttSession{d: d, topic: strings.ReplaceAll(d.cfg.Topic, "{device}", d.cfg.Name), lost: make(chan struct{})}
	user, pass := mqttPassword(d.cfg.Creds)
	o := paho.NewClientOptions().
		AddBroker("tls://" + d.cfg.Target).
		SetClientID(d.cfg.Name).
		SetUsername(user).
		SetTLSConfig(d.tlsConfig()).
		SetCleanSession(true).
		SetAutoReconnect(false). // the firmware loop reconnects with backoff
		SetConnectRetry(false).
		SetConnectTimeout(d.cfg.HandshakeTimeout).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { s.markLost() })
	if pass != "" {
		o.SetPassword(pass)
	}
	s.cl = paho.NewClient(o)
	tok := s.cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		s.cl.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect: %w", err)
	}
	if f := d.cfg.CommandTopic; f != "" {
		f = strings.ReplaceAll(f, "{device}", d.cfg.Name)
		if err := s.subscribe(ctx, f); err != nil {
			s.cl.Disconnect(0)
			return nil, err
		}
	}
	return s, nil
}

// subscribe subscribes to the command filter with QoS 1 and waits for the
// SUBACK; a refused filter (0x80, e.g. outside the broker's ACL) is an
// error.
func (s *mqttSession) subscribe(ctx context.Context, filter string) error {
	tok := s.cl.Subscribe(filter, 1, s.onCommand)
	t := time.NewTimer(mqttTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("mqtt subscribe %q: no SUBACK in time", filter)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt subscribe %q: %w", filter, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if q, ok := st.Result()[filter]; ok && q == 0x80 {
			return fmt.Errorf("mqtt subscribe %q: refused by the broker", filter)
		}
	}
	return nil
}

// onCommand counts a command and answers it (paho's callback: the reply's
// PUBACK is awaited in its own goroutine, tracked by replies).
func (s *mqttSession) onCommand(cl paho.Client, m paho.Message) {
	n := s.d.Stats.Commands.Add(1)
	s.d.log.Info("command received", "topic", m.Topic(), "bytes", len(m.Payload()))
	body, err := json.Marshal(CommandReply{Device: s.d.cfg.Name, Command: m.Topic(), Payload: string(m.Payload()), N: n})
	if err != nil {
		s.d.reportErr(err)
		return
	}
	tok := cl.Publish(s.d.cfg.ReplyPrefix+m.Topic(), 1, false, body)
	s.replies.Add(1)
	go func() {
		defer s.replies.Done()
		if !tok.WaitTimeout(mqttTimeout) {
			s.d.reportErr(fmt.Errorf("mqtt command reply on %s: no PUBACK in time", s.d.cfg.ReplyPrefix+m.Topic()))
			return
		}
		if err := tok.Error(); err != nil {
			s.d.reportErr(fmt.Errorf("mqtt command reply: %w", err))
			return
		}
		s.d.Stats.CommandReplies.Add(1)
	}()
}

func (s *mqttSession) send(ctx context.Context, _ senml.Telemetry, payload []byte) (bool, bool, error) {
	qos := byte(0)
	if s.d.cfg.Confirmable {
		qos = 1
	}
	tok := s.cl.Publish(s.topic, qos, false, payload)
	t := time.NewTimer(mqttTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return false, true, ctx.Err()
	case <-t.C:
		return false, false, errors.New("mqtt publish: no PUBACK in time")
	}
	if err := tok.Error(); err != nil {
		return false, !s.cl.IsConnectionOpen(), err
	}
	// QoS 1 completes on PUBACK (MQTT 3.1.1 §4.3.2); QoS 0 has no ack.
	return qos == 1, false, nil
}

func (s *mqttSession) notify(senml.Telemetry) {}
func (s *mqttSession) setAsleep(bool)         {}

// rebind: a NAT rebinding breaks a TCP connection; the session is dropped
// and the firmware loop reconnects.
func (s *mqttSession) rebind() error {
	s.d.Stats.Rebinds.Add(1)
	s.cl.Disconnect(0)
	s.markLost()
	s.replies.Wait()
	return nil
}
func (s *mqttSession) done() <-chan struct{} { return s.lost }
func (s *mqttSession) close() {
	s.cl.Disconnect(100)
	s.replies.Wait() // pending reply tokens end with the connection
}
