package device

import (
	"context"
	"encoding/hex"
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
	return s, nil
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
	return nil
}
func (s *mqttSession) done() <-chan struct{} { return s.lost }
func (s *mqttSession) close()                { s.cl.Disconnect(100) }
