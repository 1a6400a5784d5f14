package mqttrelay

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/fleetgate/fleetgate/bridge/spool"
)

// State is a central session's state.
//
//	Connecting --ok--> Connected --lost--> Backoff --timer--> Connecting
//	Connecting --fail--> Backoff                    (any) --Close--> Stopped
type State uint32

const (
	// StateConnecting: dialling, TLS, CONNECT in progress.
	StateConnecting State = iota
	// StateConnected: the session is up and replaying the spool.
	StateConnected
	// StateBackoff: waiting (jittered) before the next attempt.
	StateBackoff
	// StateStopped: the relay was closed.
	StateStopped
)

// String implements fmt.Stringer.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateBackoff:
		return "backoff"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

var errNotHanded = errors.New("mqttrelay: publish not accepted by the session (not connected)")

// session is one endpoint's central MQTT session. run is its owner
// goroutine: it alone connects, publishes and advances cursor.
type session struct {
	r     *Relay
	ep    string
	src   netip.Addr
	log   *slog.Logger
	store *sessionStore

	client  paho.Client
	state   atomic.Uint32
	lastErr atomic.Pointer[string]
	lost    chan error
	stop    chan struct{}
	done    chan struct{}

	rs resumeState // see resume.go

	// Owned by run.
	cursor uint64 // highest spool seq handed to paho
}

func newSession(r *Relay, ep string, src netip.Addr) *session {
	s := &session{
		r: r, ep: ep, src: src,
		log:   r.log.With("endpoint", ep, "source", src.String()),
		store: newSessionStore(r.cfg.Spool, ep),
		lost:  make(chan error, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	s.rs.kick = make(chan struct{}, 1)
	s.store.onAck = func(uint64, byte) { r.stats.Acked.Add(1) }
	s.store.onErr = func(err error) {
		r.stats.SpoolErrors.Add(1)
		s.r.warn(s.log, "mqttrelay: spool write failed", "err", err)
	}
	// Messages bound before a restart are resumed with their packet ids.
	for _, m := range r.cfg.Spool.Pending(ep, 0, math.MaxInt) {
		switch m.Stage {
		case 1:
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.TopicName = r.cfg.Mapping.Up(r.cfg.Site, ep, m.Topic)
			p.Qos, p.Retain, p.Dup, p.MessageID, p.Payload = m.QoS, m.Retain, true, m.PacketID, m.Payload
			s.store.preload(m, p)
		case 2:
			p := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
			p.MessageID = m.PacketID
			s.store.preload(m, p)
		}
	}
	o := paho.NewClientOptions()
	o.AddBroker("tcp://" + r.cfg.Server.String())
	o.SetClientID(ClientID(r.cfg.Site, ep))
	o.SetCleanSession(false)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetStore(s.store)
	o.SetKeepAlive(r.cfg.KeepAlive)
	o.SetConnectTimeout(r.cfg.ConnectTimeout)
	o.SetWriteTimeout(r.cfg.ConnectTimeout)
	o.SetOrderMatters(true)
	if r.cfg.Credentials != nil {
		if u, p := r.cfg.Credentials(ep); u != "" {
			o.SetUsername(u)
			o.SetPassword(p)
		}
	}
	o.SetCustomOpenConnectionFn(s.open)
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case s.lost <- err:
		default:
		}
	})
	s.client = paho.NewClient(o)
	return s
}

// State returns the session state.
func (s *session) State() State { return State(s.state.Load()) }

// open dials from the endpoint's own address, wraps TLS inside (paho does
// no TLS itself when a custom open function is set) and adds the PUBREC
// sniffer.
func (s *session) open(_ *url.URL, _ paho.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.ConnectTimeout)
	defer cancel()
	c, err := s.r.cfg.Dial(ctx, s.src, s.r.cfg.Server)
	if err != nil {
		return nil, err
	}
	s.store.setConn(c)
	c = s.track(c)
	if s.r.cfg.TLS != nil {
		tc := tls.Client(c, s.r.cfg.TLS.Clone())
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		c = tc
	}
	return newSniffConn(c, s.store.pubrec), nil
}

func (s *session) setErr(err error) {
	msg := err.Error()
	s.lastErr.Store(&msg)
}

func (s *session) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *session) wait(d time.Duration) bool {
	t := s.r.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-s.rs.kick: // uplink back: retry now
		return true
	case <-s.stop:
		return false
	}
}

func (s *session) run() {
	defer close(s.done)
	defer s.state.Store(uint32(StateStopped))
	backoff := s.r.cfg.BackoffMin
	for !s.stopped() {
		s.state.Store(uint32(StateConnecting))
		select {
		case <-s.lost: // stale
		default:
		}
		err := s.connect()
		if err == nil {
			backoff = s.r.cfg.BackoffMin
			s.r.stats.Connected.Add(1)
			s.state.Store(uint32(StateConnected))
			err = s.pump()
			s.r.stats.Connected.Add(-1)
			if s.stopped() {
				s.client.Disconnect(0)
				return
			}
			s.r.stats.ConnectionsLost.Add(1)
			s.client.Disconnect(0)
			s.r.warn(s.log, "mqttrelay: central session lost", "err", err)
		} else {
			s.r.stats.ConnectFailures.Add(1)
			s.r.warn(s.log, "mqttrelay: central connect failed", "err", err, "retry_in_max", backoff)
		}
		if err != nil {
			s.setErr(err)
		}
		s.state.Store(uint32(StateBackoff))
		// Exponential backoff with full jitter (cf. AWS "Exponential
		// Backoff And Jitter"): uniform in [0, backoff).
		if !s.wait(time.Duration(rand.Int64N(int64(backoff)) + 1)) {
			return
		}
		backoff = min(2*backoff, s.r.cfg.BackoffMax)
	}
}

func (s *session) waitToken(t paho.Token) bool {
	select {
	case <-t.Done():
		return true
	case <-s.stop:
		return false
	}
}

// connect opens the central session; subscriptions are made only when the
// central broker has no session for the endpoint (a kept session keeps
// them, and re-subscribing would resend retained commands).
func (s *session) connect() error {
	if n := s.store.carryOver(); n > 0 {
		s.log.Debug("mqttrelay: resuming QoS 2 releases first", "pubrel", n)
	}
	t := s.client.Connect()
	if !s.waitToken(t) {
		return errors.New("stopped")
	}
	if err := t.Error(); err != nil {
		return err
	}
	s.r.stats.Connects.Add(1)
	present := t.(*paho.ConnectToken).SessionPresent()
	s.log.Info("mqttrelay: central session up", "session_present", present, "in_flight", s.store.inflight())
	if present {
		return nil
	}
	for _, f := range s.r.cfg.Mapping.Subscriptions(s.r.cfg.Site, s.ep) {
		st := s.client.Subscribe(f, 2, s.onCommand)
		if !s.waitToken(st) {
			return errors.New("stopped")
		}
		if err := st.Error(); err != nil {
			s.client.Disconnect(0)
			return err
		}
	}
	return nil
}

// pump replays the spool in order while connected; it returns when the
// connection is lost (error) or the relay stops (nil).
func (s *session) pump() error {
	for {
		wake := s.r.cfg.Spool.Wait(s.ep)
		if room := s.r.cfg.Window - s.store.inflight(); room > 0 && s.store.carriedPending() == 0 {
			msgs := s.r.cfg.Spool.Pending(s.ep, s.cursor, room)
			for _, m := range msgs {
				if s.store.holds(m.Seq) { // resumed by paho from the store
					s.cursor = m.Seq
					continue
				}
				if err := s.send(m); err != nil {
					return err
				}
				s.cursor = m.Seq
			}
			s.store.forget(s.cursor)
			if len(msgs) > 0 {
				continue
			}
		}
		select {
		case <-wake:
		case <-s.store.freed:
		case err := <-s.lost:
			return err
		case <-s.rs.kick:
			if s.resumeNow() {
				return errUplinkResumed
			}
		case <-s.stop:
			return nil
		}
	}
}

// send hands one spool message to paho. QoS 1/2: the store binds it and
// acks it on PUBACK/PUBCOMP. QoS 0: acked once written.
func (s *session) send(m spool.Message) error {
	topic := s.r.cfg.Mapping.Up(s.r.cfg.Site, s.ep, m.Topic)
	if m.QoS == 0 {
		t := s.client.Publish(topic, 0, m.Retain, m.Payload)
		if !s.waitToken(t) {
			return errors.New("stopped")
		}
		if err := t.Error(); err != nil {
			return err
		}
		s.r.stats.Sent.Add(1)
		if err := s.r.cfg.Spool.Ack(s.ep, m.Seq); err != nil {
			s.store.onErr(err)
		}
		s.r.stats.Acked.Add(1)
		return nil
	}
	s.store.setExpect(m.Seq)
	t := s.client.Publish(topic, m.QoS, m.Retain, m.Payload)
	s.store.setExpect(0)
	if !s.store.holds(m.Seq) {
		if err := t.Error(); err != nil {
			return err
		}
		return errNotHanded
	}
	s.r.stats.Sent.Add(1)
	return nil
}

// onCommand relays a central message down to the device.
func (s *session) onCommand(_ paho.Client, msg paho.Message) {
	topic, ok := s.r.cfg.Mapping.Down(s.r.cfg.Site, s.ep, msg.Topic())
	if !ok || s.r.cfg.Downlink == nil {
		s.r.stats.CommandsDropped.Add(1)
		return
	}
	if err := s.r.cfg.Downlink.Deliver(s.ep, topic, msg.Payload(), msg.Qos(), msg.Retained()); err != nil {
		s.r.stats.CommandsDropped.Add(1)
		s.r.warn(s.log, "mqttrelay: command not delivered", "topic", topic, "err", err)
		return
	}
	s.r.stats.CommandsDelivered.Add(1)
}
