// Package mqttrelay connects each MQTT endpoint of the site broker
// (downlink/mqtt) to the central MQTT broker with its own paho.mqtt.golang
// session: client ID = "<site>/<endpoint>" (ClientID; endpoint names are
// unique per site only), TCP dialled FROM the endpoint's VPN
// address (Config.Dial: the userspace IP stack's DialTCP in the bridge,
// NetDialer in tests), TLS wrapped inside that dial (paho does no TLS when
// a custom open function is set), persistent session (clean session false)
// so commands wait at the central broker while the bridge is away.
//
// Upstream (device -> central): Relay.Publish is the site broker's
// Upstream. Every message goes to the spool first (QoS 1/2 durably, before
// the device gets PUBACK/PUBREC), then the endpoint's session replays the
// spool in order with the device's QoS and retain flag, mapped by
// Config.Mapping, and deletes each message only when the central broker
// acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 once
// written). While the uplink or the central broker is down, messages
// accumulate in the spool (its overflow policy applies); a restarted bridge
// resumes from it. Reconnects back off exponentially with full jitter.
//
// Delivery guarantees, as tested (TestOutageWithoutLoss,
// TestResumeAfterRestart, TestKillAtEachQoS2Step, e2e
// TestMqttOutageWithoutLoss):
//
//   - nothing acknowledged to a device is lost across WAN outages, central
//     broker outages and a kill of the bridge;
//   - QoS 1 is at least once: messages in flight when a connection breaks
//     are sent again;
//   - QoS 2 is exactly once: the spool records each message's packet id
//     and stage (sessionStore, the PUBREC sniffer), a restarted relay
//     resumes the same ids on the persistent session, and a device's DUP
//     retransmission after a bridge restart is recognised by the spool.
//     This holds for a kill -9 at any step of the flow: stage 1 (packet
//     id) is written before paho writes the PUBLISH, stage 2 before paho
//     sees the PUBREC (both fsynced, so also across a power loss), and a
//     binding that cannot be written closes the connection instead of
//     letting the packet out (TestBindFailureStopsTheFlow). After a restart
//     the messages paho resumes stay "handed" until the pump has passed
//     them, also once completed (TestResumedCompletionNotResent).
//     It relies on the central broker keeping the endpoint's session: a
//     central broker that loses it (restart without persistence, session
//     expiry, another client taking the ID) forgets its half of the
//     in-flight exchanges, at most Window per endpoint. Mosquitto hands a
//     QoS 2 message on at PUBREL, so for it the resent stage 1 messages
//     are not duplicated, but released stage 2 messages it never got the
//     PUBREL for are lost; a broker that hands messages on at PUBLISH
//     would duplicate the stage 1 ones instead.
//
// Downstream (central -> device): each session subscribes to the mapped
// command filters (only when the central broker has no session, so retained
// commands are not re-sent on every reconnect) and hands what arrives to
// Config.Downlink (the site broker's Deliver), which queues it in the
// device's persistent session; paho acknowledges to the central broker
// after that. With the site broker's SessionDB the queued commands survive
// a bridge restart.
//
// A device's last will is relayed like any message when the site broker
// publishes it. Status and Metrics report per-endpoint state and queues for
// `bridge status` and /metrics.
package mqttrelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Dialer opens a TCP connection from local address src to dst. The bridge
// passes the userspace IP stack's DialTCP; tests use a net.Dialer bound to
// src (see NetDialer).
type Dialer func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)

// NetDialer dials with the host's kernel stack, binding the source address.
func NetDialer(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	return d.DialContext(ctx, "tcp", dst.String())
}

// Downlink delivers a central command to a device (downlink/mqtt.Broker).
type Downlink interface {
	Deliver(endpoint, topic string, payload []byte, qos byte, retain bool) error
}

// Config configures a Relay.
type Config struct {
	// Site names this site in the topic mapping.
	Site string
	// Server is the central broker's address (inside the VPN).
	Server netip.AddrPort
	// TLS, if set, is used toward the central broker (ServerName should
	// be set); nil means plain MQTT.
	TLS *tls.Config
	// Credentials returns the central broker login of an endpoint
	// (optional; empty username means none).
	Credentials func(endpoint string) (username, password string)
	// Dial opens connections from an endpoint's address (NetDialer if nil).
	Dial Dialer
	// AddrOf returns an endpoint's VPN address (required).
	AddrOf func(endpoint string) (netip.Addr, bool)
	// Mapping is the topic mapping (defaults documented on Mapping).
	Mapping Mapping
	// Spool is the store-and-forward queue (required).
	Spool *spool.Spool
	// Downlink receives central commands (optional). The site broker takes
	// the relay as its Upstream and the relay takes the broker as its
	// Downlink: create the relay with a Downlink that forwards to the
	// broker variable assigned right after (as startSite in the tests does).
	Downlink Downlink
	// Window, KeepAlive, ConnectTimeout, BackoffMin, BackoffMax: see the
	// Default constants.
	Window         int
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	BackoffMin     time.Duration
	BackoffMax     time.Duration
	// Clock drives reconnect backoff (clock.System if nil).
	Clock clock.Clock
	// Logger receives lifecycle lines (discarded if nil).
	Logger *slog.Logger
}

// Relay runs one central session per MQTT endpoint.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	stats Stats

	// warnMu guards the warning rate limit: during an uplink outage every
	// session fails at once, and thousands of endpoints must not flood the
	// log. One warning per second passes; the rest are counted and the
	// count is attached to the next one.
	warnMu     sync.Mutex
	warnLast   time.Time
	suppressed int

	mu       sync.Mutex
	closed   bool
	sessions map[string]*session
}

// warn logs at Warn level, rate-limited (see warnMu).
func (r *Relay) warn(lg *slog.Logger, msg string, args ...any) {
	now := r.cfg.Clock.Now()
	r.warnMu.Lock()
	if now.Sub(r.warnLast) < time.Second {
		r.suppressed++
		r.warnMu.Unlock()
		return
	}
	n := r.suppressed
	r.warnLast, r.suppressed = now, 0
	r.warnMu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	lg.Warn(msg, args...)
}

var _ mqtt.Upstream = (*Relay)(nil)

// New validates cfg and creates a relay; sessions start on Start, on the
// first message of an endpoint, or on AddEndpoint.
func New(cfg Config) (*Relay, error) {
	if cfg.Spool == nil || cfg.AddrOf == nil || !cfg.Server.IsValid() {
		return nil, fmt.Errorf("%w: Spool, AddrOf and Server are required", ErrConfig)
	}
	cfg.Mapping = cfg.Mapping.withDefaults()
	if err := cfg.Mapping.validate(); err != nil {
		return nil, err
	}
	if cfg.Dial == nil {
		cfg.Dial = NetDialer
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Relay{cfg: cfg, log: lg.With("component", "mqttrelay"), sessions: make(map[string]*session)}, nil
}

// Stats returns the relay's counters.
func (r *Relay) Stats() *Stats { return &r.stats }

// Start starts a session for every endpoint with a backlog in the spool
// (messages accepted before a restart).
func (r *Relay) Start() error {
	for _, ep := range r.cfg.Spool.Endpoints() {
		if err := r.AddEndpoint(ep); err != nil {
			r.warn(r.log, "mqttrelay: backlog for unknown endpoint stays queued", "endpoint", ep, "err", err)
		}
	}
	return nil
}

// AddEndpoint starts the endpoint's central session if it is not running,
// so its commands are subscribed even before the device publishes.
func (r *Relay) AddEndpoint(endpoint string) error {
	_, err := r.session(endpoint)
	return err
}

func (r *Relay) session(endpoint string) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if s, ok := r.sessions[endpoint]; ok {
		return s, nil
	}
	src, ok := r.cfg.AddrOf(endpoint)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownEndpoint, endpoint)
	}
	s := newSession(r, endpoint, src)
	r.sessions[endpoint] = s
	go s.run()
	return s, nil
}

// RemoveEndpoint revokes an endpoint (removed or re-keyed): with drain > 0
// its central session first keeps sending what the spool holds for it, for
// at most drain; then the session is stopped (its connection from the
// endpoint's address closed before RemoveEndpoint returns, so the address
// may be given to another endpoint) and whatever is still queued for it
// is dropped from the spool. It returns how many messages were dropped.
// The device must already be disconnected from the site broker
// (mqtt.Broker.Revoke), so nothing new is queued meanwhile.
func (r *Relay) RemoveEndpoint(endpoint string, drain time.Duration) (int, error) {
	r.mu.Lock()
	s := r.sessions[endpoint]
	r.mu.Unlock()
	if s != nil && drain > 0 {
		deadline := r.cfg.Clock.Now().Add(drain)
		for {
			n, _, _ := r.cfg.Spool.Depth(endpoint)
			if n == 0 || !r.cfg.Clock.Now().Before(deadline) {
				break
			}
			select {
			case <-s.done:
			case <-r.cfg.Spool.Wait(endpoint):
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	r.mu.Lock()
	if s = r.sessions[endpoint]; s != nil {
		delete(r.sessions, endpoint)
	}
	r.mu.Unlock()
	if s != nil {
		select {
		case <-s.stop:
		default:
			close(s.stop)
		}
		<-s.done
		r.stats.Revoked.Add(1)
	}
	n, err := r.cfg.Spool.DropEndpoint(endpoint)
	r.log.Info("mqttrelay: endpoint revoked: central session stopped, queued messages dropped",
		"endpoint", endpoint, "dropped", n, "drained_for_max", drain)
	return n, err
}

// Publish implements mqtt.Upstream: the message is spooled (durably for
// QoS 1/2) before it returns; the endpoint's session sends it on. A QoS 2
// retransmission (DUP) of a message already spooled under the same device
// packet identifier is acknowledged without queueing it again: after a
// bridge restart the site broker has forgotten the device's QoS 2 state,
// the spool has not.
func (r *Relay) Publish(endpoint string, m mqtt.Message) error {
	sm := spool.Message{
		Endpoint: endpoint, Topic: m.Topic, QoS: m.QoS, Retain: m.Retain,
		Payload: append([]byte(nil), m.Payload...), Dup: m.Dup,
	}
	if m.QoS == 2 {
		sm.DevicePacketID = m.PacketID
	}
	_, err := r.cfg.Spool.Append(sm)
	if errors.Is(err, spool.ErrDuplicate) {
		r.stats.DuplicatesDropped.Add(1)
		return nil
	}
	if err != nil {
		r.stats.SpoolRefused.Add(1)
		return err
	}
	r.stats.Spooled.Add(1)
	if _, err := r.session(endpoint); err != nil {
		r.warn(r.log, "mqttrelay: message queued, no session", "endpoint", endpoint, "err", err)
	}
	return nil
}

// EndpointStatus is one endpoint's relay state for `bridge status`.
type EndpointStatus struct {
	Endpoint  string
	Source    netip.Addr
	State     State
	LastError string
	Queued    int
	Bytes     int64
	Oldest    time.Time
	InFlight  int
}

// Status lists every session, sorted by endpoint.
func (r *Relay) Status() []EndpointStatus {
	r.mu.Lock()
	ss := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	out := make([]EndpointStatus, 0, len(ss))
	for _, s := range ss {
		st := EndpointStatus{Endpoint: s.ep, Source: s.src, State: s.State(), InFlight: s.store.inflight()}
		if e := s.lastErr.Load(); e != nil {
			st.LastError = *e
		}
		st.Queued, st.Bytes, st.Oldest = r.cfg.Spool.Depth(s.ep)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}

// Close stops every session at once, without waiting for in-flight
// messages: they stay in the spool and are resent on the next start.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ss := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	for _, s := range ss {
		close(s.stop)
	}
	for _, s := range ss {
		<-s.done
	}
	return nil
}
