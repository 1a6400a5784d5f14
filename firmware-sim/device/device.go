// Package device simulates one microcontroller endpoint: CoAP over DTLS
// (pion/dtls v3 + go-coap v3; PSK or ECDSA P-256; CCM_8 or GCM; Connection
// ID on or off) or MQTT over TLS (paho), sending periodic SenML telemetry
// with a per-device sequence number, serving CoAP GET/observe on its own
// DTLS session, duty-cycling like a sleepy node, reconnecting with
// exponential backoff and jitter, and optionally suffering injected packet
// loss and NAT rebinding in its own socket wrapper (FaultConn).
package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/ctxsleep"
)

// Protocol selects the device's uplink to the bridge.
type Protocol string

const (
	// CoAP is CoAP over DTLS 1.2 (RFC 7252 §9).
	CoAP Protocol = "coap"
	// MQTT is MQTT 3.1.1 over TLS.
	MQTT Protocol = "mqtt"
)

// Config describes one simulated device.
type Config struct {
	// Name identifies the device (SenML base name, MQTT client ID).
	Name string
	// Group labels it in reports.
	Group string
	// Index is the device number in the fleet (sensor-<Index>); it seeds
	// the simulated readings.
	Index int
	// Protocol is CoAP or MQTT.
	Protocol Protocol
	// Target is the bridge address, host:port.
	Target string
	// Path is the CoAP telemetry resource, e.g. "/telemetry".
	Path string
	// PUT sends telemetry with PUT instead of POST (for servers such as
	// libcoap's example server that create resources on PUT).
	PUT bool
	// Topic is the MQTT telemetry topic.
	Topic string
	// CommandTopic is the MQTT filter the device subscribes to for
	// commands (empty: none); every command is counted (Stats.Commands)
	// and answered with a QoS 1 publish on ReplyPrefix + its topic
	// (Stats.CommandReplies counts the acknowledged replies).
	CommandTopic, ReplyPrefix string
	// Creds is the device's identity: KindPSK (identity + key), KindCert
	// (Cert), or KindMQTT (username + password; KindPSK also works for
	// MQTT, its secret hex-encoded as password).
	Creds *creds.Entry
	// Suite is "ccm8" or "gcm".
	Suite string
	// CID asks the server for a DTLS Connection ID (RFC 9146).
	CID bool
	// Format is the SenML representation.
	Format senml.Format
	// Interval is the telemetry period.
	Interval time.Duration
	// Confirmable: CoAP CON (else NON); MQTT QoS 1 (else QoS 0).
	Confirmable bool
	// Awake > 0 makes the device sleepy: after each send it listens for
	// Awake, then turns its radio off until the next period.
	Awake time.Duration
	// LossPercent drops datagrams in each direction (CoAP only).
	LossPercent float64
	// RebindEvery moves to a new source port this often (0: never).
	RebindEvery time.Duration
	// BackoffMin and BackoffMax bound reconnection backoff (defaults 1 s
	// and 32 s: Zephyr's LwM2M client, see scenario.DefaultBackoffMin).
	BackoffMin, BackoffMax time.Duration
	// HandshakeTimeout bounds one DTLS handshake or MQTT connect (default
	// 20 s: several doubled flights on a lossy link, RFC 6347 §4.2.4.1).
	HandshakeTimeout time.Duration
	// AckTimeout and MaxRetransmit are the CoAP transmission parameters
	// (defaults from RFC 7252 §4.8).
	AckTimeout    time.Duration
	MaxRetransmit uint32
	// RootCAs verifies the server certificate; ServerName is checked
	// against it. InsecureSkipVerify skips verification (demo only).
	RootCAs            *x509.CertPool
	ServerName         string
	InsecureSkipVerify bool
	// BindIP is the local address to send from (nil: any).
	BindIP net.IP
	// Listen opens the device's UDP socket (nil: net.ListenUDP), e.g. in
	// another network namespace.
	Listen ListenFunc
	// ZeroToken sends CoAP telemetry with a zero-length token (RFC 7252
	// §5.3.1 allows it; many MCU stacks do it).
	ZeroToken bool
	// FailuresBeforeReconnect is how many consecutive exchanges without
	// any answer make the firmware drop its session and handshake again
	// (default 2). An answer, even 5.03 or 4.xx, proves the session alive.
	FailuresBeforeReconnect int
	// OnUnavailable, if set, is called for a telemetry message answered
	// 5.03 Service Unavailable (CoAP) with its Max-Age (the device does not
	// retry it; Stats.Unavailable counts it).
	OnUnavailable func(seq uint64, maxAge time.Duration)
	// StartDelay staggers the first wake-up.
	StartDelay time.Duration
	// Seed makes loss and jitter reproducible.
	Seed uint64
	// Logger receives lifecycle lines; nil discards.
	Logger *slog.Logger
	// OnError, if set, receives connection and send errors.
	OnError func(error)
	// OnResult, if set, is called once per telemetry message with its
	// sequence number and whether it was acknowledged (from Run's
	// goroutine).
	OnResult func(seq uint64, acked bool)
	// DrainTimeout lets an exchange in flight when Run's context ends
	// finish for up to this long (so that its ack is counted); 0 abandons
	// it at once.
	DrainTimeout time.Duration
}

// Device is one simulated endpoint. Create with New, run with Run.
type Device struct {
	cfg   Config
	log   *slog.Logger
	rng   *rand.Rand
	Stats report.Stats

	mu     sync.Mutex // guards latest
	latest senml.Telemetry
}

// New validates cfg and returns a Device.
func New(cfg Config) (*Device, error) {
	if cfg.Name == "" || cfg.Target == "" || cfg.Interval <= 0 {
		return nil, fmt.Errorf("%w: name, target and interval are required", ErrConfig)
	}
	if cfg.Creds == nil {
		return nil, fmt.Errorf("%w: %s: no credentials", ErrConfig, cfg.Name)
	}
	switch cfg.Protocol {
	case CoAP:
		if cfg.Creds.Kind == creds.KindMQTT {
			return nil, fmt.Errorf("%w: %s: coap needs psk or cert credentials", ErrConfig, cfg.Name)
		}
		if cfg.Creds.Kind == creds.KindCert && cfg.Creds.Cert == nil {
			return nil, fmt.Errorf("%w: %s: certificate not loaded", ErrConfig, cfg.Name)
		}
	case MQTT:
	default:
		return nil, fmt.Errorf("%w: %s: protocol %q", ErrConfig, cfg.Name, cfg.Protocol)
	}
	if cfg.Format == 0 {
		cfg.Format = senml.FormatJSON
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.MaxRetransmit == 0 {
		cfg.MaxRetransmit = DefaultMaxRetransmit
	}
	if cfg.FailuresBeforeReconnect <= 0 {
		cfg.FailuresBeforeReconnect = failuresBeforeReconnect
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = 32 * time.Second
	}
	if cfg.Seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(cfg.Name))
		cfg.Seed = h.Sum64()
	}
	d := &Device{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 1))}
	d.log = cfg.Logger
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("device", cfg.Name)
	return d, nil
}

// Config returns the device's effective configuration.
func (d *Device) Config() Config { return d.cfg }

// maxTransmitWait is MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2):
// ACK_TIMEOUT × (2^(MAX_RETRANSMIT+1) − 1) × ACK_RANDOM_FACTOR.
func (d *Device) maxTransmitWait() time.Duration {
	return time.Duration(float64(d.cfg.AckTimeout) * float64(int(1)<<(d.cfg.MaxRetransmit+1)-1) * ackRandomFactor)
}

// sample produces the next reading: a slow daily-like sine per device
// plus noise.
func (d *Device) sample(seq uint64, now time.Time) senml.Telemetry {
	phase := float64(d.cfg.Index)
	secs := float64(now.UnixMilli()) / 1000
	temp := 21 + 4*math.Sin(secs/600+phase) + d.rng.NormFloat64()*0.1
	hum := 45 + 10*math.Cos(secs/900+phase) + d.rng.NormFloat64()*0.5
	t := senml.Telemetry{
		Device: d.cfg.Name,
		Seq:    seq,
		Time:   now,
		Values: []senml.Measurement{
			{Name: "temp", Unit: "Cel", Value: math.Round(temp*100) / 100},
			{Name: "humidity", Unit: "%RH", Value: math.Round(hum*10) / 10},
		},
	}
	d.mu.Lock()
	d.latest = t
	d.mu.Unlock()
	return t
}

// Latest returns the last reading taken (served by GET /sensors/...).
func (d *Device) Latest() senml.Telemetry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest
}

// session is one connection to the bridge.
type session interface {
	// send delivers one telemetry payload; acked reports a positive
	// acknowledgement; fatal reports that the session is unusable.
	send(ctx context.Context, t senml.Telemetry, payload []byte) (acked bool, fatal bool, err error)
	// notify pushes t to observers of the device's resources.
	notify(t senml.Telemetry)
	// setAsleep turns the radio off/on.
	setAsleep(bool)
	// rebind changes the source port (NAT rebinding).
	rebind() error
	// done is closed when the session died underneath.
	done() <-chan struct{}
	close()
}

func (d *Device) dial(ctx context.Context) (session, error) {
	switch d.cfg.Protocol {
	case CoAP:
		return d.dialCoAP(ctx)
	default:
		return d.dialMQTT(ctx)
	}
}

func (d *Device) reportErr(err error) {
	if d.cfg.OnError != nil && err != nil {
		d.cfg.OnError(fmt.Errorf("%s: %w", d.cfg.Name, err))
	}
}

// Run is the firmware main loop; it returns when ctx ends. Each period it
// (re)connects if needed, sends one telemetry message with the next
// sequence number, notifies observers, listens for the awake window when
// sleepy and then sleeps with the radio off.
func (d *Device) Run(ctx context.Context) error {
	var (
		sess       session
		seq        uint64
		fails      int
		everUp     bool
		bo         = NewBackoff(d.cfg.BackoffMin, d.cfg.BackoffMax, d.rng)
		next       = time.Now().Add(d.cfg.StartDelay)
		nextRebind time.Time
	)
	defer func() {
		if sess != nil {
			sess.close()
			d.Stats.Connected.Store(0)
		}
	}()
	drop := func(reason string) {
		sess.close()
		sess = nil
		d.Stats.Connected.Store(0)
		d.log.Info("session closed", "reason", reason)
	}
	for {
		// Sleep until the next period (radio off when sleepy).
		var died <-chan struct{}
		if sess != nil {
			died = sess.done()
		}
		wait := time.Until(next)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-died:
				t.Stop()
				drop("connection lost")
				continue
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if sess != nil && d.cfg.RebindEvery > 0 && !time.Now().Before(nextRebind) {
			if err := sess.rebind(); err != nil {
				d.reportErr(err)
			}
			d.log.Debug("nat rebinding")
			nextRebind = time.Now().Add(d.cfg.RebindEvery)
		}
		if sess == nil {
			s, err := d.dial(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				d.Stats.HandshakeFailures.Add(1)
				d.reportErr(err)
				delay := bo.Next()
				d.log.Info("connect failed", "err", err, "retry_in", delay)
				next = time.Now().Add(delay)
				continue
			}
			sess, fails = s, 0
			bo.Reset()
			d.Stats.Handshakes.Add(1)
			d.Stats.Connected.Store(1)
			if everUp {
				d.Stats.Reconnects.Add(1)
			}
			everUp = true
			nextRebind = time.Now().Add(d.cfg.RebindEvery)
			d.log.Info("session established")
		}
		sess.setAsleep(false)
		seq++
		now := time.Now()
		tel := d.sample(seq, now)
		payload, err := tel.Encode(d.cfg.Format)
		if err != nil {
			return fmt.Errorf("device: %s: %w", d.cfg.Name, err)
		}
		d.Stats.Sent.Add(1)
		d.Stats.LastSeq.Store(seq)
		// The exchange may outlive ctx by DrainTimeout, so that a message
		// the peer got is not reported unacknowledged only because the
		// run ended.
		sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
		stopDrain := context.AfterFunc(ctx, func() { time.AfterFunc(d.cfg.DrainTimeout, scancel) })
		acked, fatal, err := sess.send(sctx, tel, payload)
		stopDrain()
		scancel()
		if d.cfg.OnResult != nil {
			d.cfg.OnResult(seq, acked)
		}
		var answered *AnswerError
		switch {
		case acked:
			d.Stats.Acked.Add(1)
			d.Stats.Latency.Observe(time.Since(now))
			fails = 0
		case errors.As(err, &answered):
			// The bridge answered: the session is alive, the message
			// was refused (5.03: retry later).
			d.Stats.Unacked.Add(1)
			fails = 0
			if answered.Code == codes.ServiceUnavailable {
				d.Stats.Unavailable.Add(1)
				if d.cfg.OnUnavailable != nil {
					d.cfg.OnUnavailable(seq, answered.MaxAge)
				}
			}
		case d.cfg.Confirmable:
			d.Stats.Unacked.Add(1)
			fails++
		}
		if err != nil && ctx.Err() == nil {
			d.reportErr(err)
		}
		sess.notify(tel)
		if ctx.Err() != nil {
			return nil
		}
		if fatal || fails >= d.cfg.FailuresBeforeReconnect {
			drop(fmt.Sprintf("send failed: %v", err))
			next = time.Now().Add(bo.Next())
			continue
		}
		next = next.Add(d.cfg.Interval)
		if now := time.Now(); next.Before(now) {
			next = now // the exchange overran the period: send again at once
		}
		if d.cfg.Awake > 0 {
			if !ctxsleep.Sleep(ctx, min(d.cfg.Awake, time.Until(next))) {
				return nil
			}
			sess.setAsleep(true)
		}
	}
}

// tlsConfig builds the client TLS settings shared by MQTT.
func (d *Device) tlsConfig() *tls.Config {
	c := &tls.Config{
		RootCAs:            d.cfg.RootCAs,
		ServerName:         d.cfg.ServerName,
		InsecureSkipVerify: d.cfg.InsecureSkipVerify, //nolint:gosec // demo option, off by default
		MinVersion:         tls.VersionTLS12,
	}
	if d.cfg.Creds.Kind == creds.KindCert && d.cfg.Creds.Cert != nil {
		c.Certificates = []tls.Certificate{*d.cfg.Creds.Cert}
	}
	return c
}
