// Package mqtt is the bridge's MQTT downlink: an embedded broker (mochi-mqtt
// v2) on the site LAN that MCUs connect to over TLS (port 8883, site CA;
// plain 1883 optional, off by default), with MQTT 3.1.1 and 5.
//
// Each device authenticates as one endpoint (username/password or a client
// certificate whose CN names the endpoint) and its client ID must be the
// endpoint name. Inside the broker every endpoint has its own namespace:
// device topic "telemetry/t" is stored as "ep/<endpoint>/telemetry/t", so
// devices never see each other's messages. The ACL lets a device publish
// only under Config.PublishFilters (default telemetry/#, status/#) and
// subscribe only within Config.SubscribeFilters (default cmd/#); anything
// else (topic injection: "#", "$SYS/…", "../", other endpoints' topics) is
// refused and counted in Stats.TopicDenied.
//
// Messages a device publishes go synchronously to Config.Upstream before
// the broker acknowledges them (see hook.OnPublish); the relay spools QoS 1/2
// ones durably there. Messages for a device come in through Deliver and wait
// in the device's persistent session (clean session false / session expiry)
// while it sleeps. With Config.SessionDB the sessions (subscriptions, queued
// commands, retained messages) live in a bbolt file and survive a bridge
// restart; without it they are in memory only and a restart loses commands
// the relay had already accepted from the central broker.
package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Message is one MQTT application message as the device sees it.
type Message struct {
	// Topic is the device-side topic name.
	Topic string
	// Payload is the application payload (may alias broker buffers: copy
	// it to keep it).
	Payload []byte
	// QoS is 0, 1 or 2.
	QoS byte
	// Retain is the retain flag.
	Retain bool
	// Will marks a last-will message published on the device's behalf.
	Will bool
	// PacketID and Dup are the device's packet identifier and DUP flag
	// (QoS 1/2), so the Upstream can recognise a retransmission.
	PacketID uint16
	Dup      bool
}

// Upstream receives device messages. Publish is called on the device's
// connection goroutine before the broker acknowledges the message; a non-nil
// error refuses it (see the package comment).
type Upstream interface {
	Publish(endpoint string, m Message) error
}

// Config configures a Broker.
type Config struct {
	// TLSAddr is the TLS listen address (DefaultTLSAddr if empty and
	// TLSListener is nil). Set DisableTLS to run without it.
	TLSAddr string
	// TLSListener, if set, is used instead of listening on TLSAddr (for
	// example a listener in the userspace IP stack); it carries raw TCP,
	// the broker wraps TLS around it.
	TLSListener net.Listener
	// TLS is the server configuration (site certificate; ClientCAs and
	// ClientAuth VerifyClientCertIfGiven for certificate logins).
	TLS *tls.Config
	// DisableTLS turns the TLS listener off (tests only).
	DisableTLS bool
	// PlainAddr enables plain MQTT on this address (e.g. ":1883"); empty
	// means off, which is the default.
	PlainAddr string
	// Auth maps credentials to endpoints (required).
	Auth Authenticator
	// PublishFilters and SubscribeFilters are the device-side mapping
	// (defaults DefaultPublishFilters, DefaultSubscribeFilters).
	PublishFilters   []string
	SubscribeFilters []string
	// MaxPacketSize bounds one packet from a device (DefaultMaxPacketSize).
	MaxPacketSize uint32
	// PublishRate limits each endpoint's publishes per second (burst
	// PublishBurst, default 10x the rate); 0 means unlimited. A device over
	// the limit is refused like a full queue (MQTT 5 QoS 1: PUBACK 0x97;
	// otherwise no acknowledgement and a disconnect; QoS 0 dropped) and
	// counted in Stats.RateLimited.
	PublishRate  float64
	PublishBurst int
	// PublishByteRate limits the bytes (topic + payload) each endpoint
	// may publish per second, with a burst of PublishByteBurst (raised to
	// MaxPacketSize if smaller); 0 means DefaultPublishByteRate and
	// DefaultPublishByteBurst, negative means unlimited. A publish over it
	// is refused like one over PublishRate and counted in
	// Stats.ByteRateLimited.
	PublishByteRate  float64
	PublishByteBurst int
	// ConnectTimeout bounds the time from accepting a connection to a
	// complete CONNECT (TLS handshake included), DefaultConnectTimeout if
	// zero. mochi sets no deadline before CONNECT, so without it an idle
	// connection would be held forever.
	ConnectTimeout time.Duration
	// Bounds on what one device or an unauthenticated peer can make the
	// broker keep (bounds.go); zero means the Default… constant.
	// MaxTopicLength bounds a device's topic names and filters (bytes);
	// longer ones end the connection (Stats.TopicTooLong).
	MaxTopicLength int
	// TopicAliasMaximum is offered to MQTT 5 devices; an alias above it
	// ends the connection (Stats.AliasRefused).
	TopicAliasMaximum uint16
	// MaxSubscriptions per client; more get a SUBACK failure
	// (Stats.SubscriptionsRefused).
	MaxSubscriptions int
	// RetainedPerEndpoint is how many retained topics the broker keeps per
	// endpoint; zero keeps none (devices cannot read each other's or
	// their own telemetry), negative means the default (none). Retained
	// publishes are still relayed upstream with the flag; the ones not
	// kept are counted in Stats.RetainDropped.
	RetainedPerEndpoint int
	// ReceiveMaximum bounds a device's unacknowledged QoS 1/2 publishes;
	// MaxQueued the messages kept for one client (a sleeping device's
	// commands; mochi drops the oldest over it) and the writes waiting
	// for a connected client's socket.
	ReceiveMaximum, MaxQueued uint16
	// SessionExpiry bounds how long a disconnected device's session
	// (subscriptions, queued commands) is kept.
	SessionExpiry time.Duration
	// MaxPendingConnects and MaxPendingConnectsPerSource bound connections
	// accepted but without a CONNECT yet (TLS handshake included), in
	// total and per source IP; more are closed at once
	// (Stats.PendingConnectRefused, PendingConnectRefusedSource).
	MaxPendingConnects, MaxPendingConnectsPerSource int
	// Upstream receives device messages (may be nil: nothing is relayed).
	Upstream Upstream
	// SessionDB, if set, is a bbolt file where device sessions are kept
	// (subscriptions, messages waiting for sleeping devices, retained
	// messages), so commands survive a bridge restart. Empty keeps sessions
	// in memory only.
	SessionDB string
	// SessionDBSync fsyncs every session update. Without it updates survive
	// a crash of the process but not a power loss.
	SessionDBSync bool
	// Clock is used for log rate limiting (clock.System if nil).
	Clock clock.Clock
	// Logger receives lifecycle lines and rate-limited warnings.
	Logger *slog.Logger
}

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	acl    ACL
	stats  Stats
	warnRL rateLimiter
	srv    *mochi.Server
	hook   *hook
	bounds *boundsHook

	pending pendingConns
	store   *sessionStore // nil without Config.SessionDB

	mu     sync.Mutex
	addrs  map[string]net.Addr
	closed bool
}

// New validates cfg and builds a broker; Start begins listening.
func New(cfg Config) (*Broker, error) {
	if cfg.Auth == nil {
		return nil, ErrNoAuth
	}
	if !cfg.DisableTLS && cfg.TLS == nil {
		return nil, ErrNoTLS
	}
	if cfg.TLSAddr == "" {
		cfg.TLSAddr = DefaultTLSAddr
	}
	if cfg.PublishFilters == nil {
		cfg.PublishFilters = DefaultPublishFilters
	}
	if cfg.SubscribeFilters == nil {
		cfg.SubscribeFilters = DefaultSubscribeFilters
	}
	for _, f := range append(append([]string(nil), cfg.PublishFilters...), cfg.SubscribeFilters...) {
		if !validFilter(f) {
			return nil, fmt.Errorf("%w: %q", ErrBadFilter, f)
		}
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.PublishRate > 0 && cfg.PublishBurst <= 0 {
		cfg.PublishBurst = int(10*cfg.PublishRate) + 1
	}
	if cfg.PublishByteRate == 0 {
		cfg.PublishByteRate = DefaultPublishByteRate
		if cfg.PublishByteBurst <= 0 {
			cfg.PublishByteBurst = DefaultPublishByteBurst
		}
	}
	if cfg.PublishByteBurst < int(cfg.MaxPacketSize) {
		cfg.PublishByteBurst = int(cfg.MaxPacketSize)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.MaxTopicLength <= 0 {
		cfg.MaxTopicLength = DefaultMaxTopicLength
	}
	if cfg.TopicAliasMaximum == 0 {
		cfg.TopicAliasMaximum = DefaultTopicAliasMaximum
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.RetainedPerEndpoint < 0 {
		cfg.RetainedPerEndpoint = 0
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = DefaultReceiveMaximum
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.SessionExpiry <= 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.MaxPendingConnects <= 0 {
		cfg.MaxPendingConnects = DefaultMaxPendingConnects
	}
	if cfg.MaxPendingConnectsPerSource <= 0 {
		cfg.MaxPendingConnectsPerSource = DefaultMaxPendingConnectsPerSource
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	b := &Broker{
		cfg:    cfg,
		log:    lg.With("component", "mqtt"),
		acl:    ACL{Publish: cfg.PublishFilters, Subscribe: cfg.SubscribeFilters},
		warnRL: rateLimiter{interval: time.Second},
		addrs:  make(map[string]net.Addr),
	}
	b.pending = pendingConns{max: cfg.MaxPendingConnects, maxPerSource: cfg.MaxPendingConnectsPerSource,
		by: map[netip.Addr]int{}, conns: map[net.Conn]netip.Addr{}}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.SharedSubAvailable = 0
	caps.TopicAliasMaximum = cfg.TopicAliasMaximum
	caps.ReceiveMaximum = cfg.ReceiveMaximum
	caps.MaximumInflight = cfg.MaxQueued
	// Writes waiting for a connected client's socket: mochi allocates this
	// many slots per client at accept (8192 = 64 KB of channel, most of a
	// connection's cost before CONNECT); over it QoS 0 is dropped and
	// QoS 1/2 stays inflight for a resend.
	caps.MaximumClientWritesPending = int32(cfg.MaxQueued)
	caps.MaximumSessionExpiryInterval = uint32(min(cfg.SessionExpiry/time.Second, math.MaxUint32))
	// Mochi's library logs go to our logger at warn and above only.
	mlog := slog.New(&levelFilter{h: b.log.Handler(), min: slog.LevelWarn})
	b.srv = mochi.New(&mochi.Options{InlineClient: true, Capabilities: caps, Logger: mlog})
	b.hook = &hook{b: b, connected: make(map[string]int), limits: make(map[string]*rate.Limiter),
		byteLimits: make(map[string]*rate.Limiter),
		revoking:   make(map[string]int), revoked: make(map[*mochi.Client]chan struct{})}
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	// After b.hook: its OnSubscribe mounts the filters and its OnPublish
	// relays upstream before the bounds see them.
	b.bounds = &boundsHook{b: b, retained: map[string]map[string]struct{}{}}
	if err := b.srv.AddHook(b.bounds, nil); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if cfg.SessionDB != "" {
		store, err := newSessionStore(cfg.SessionDB)
		if err != nil {
			return nil, fmt.Errorf("mqtt: session store: %w", err)
		}
		opts := &bolt.Options{Path: cfg.SessionDB, Bucket: sessionBucket, Options: &bbolt.Options{Timeout: time.Second, NoSync: !cfg.SessionDBSync}}
		if err := b.srv.AddHook(store, opts); err != nil {
			return nil, fmt.Errorf("mqtt: session store: %w", err)
		}
		b.store = &store
	}
	return b, nil
}

// Start opens the listeners and serves in the background.
func (b *Broker) Start() error {
	if !b.cfg.DisableTLS {
		ln := b.cfg.TLSListener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", b.cfg.TLSAddr); err != nil {
				return fmt.Errorf("mqtt: %w", err)
			}
		}
		if err := b.addListener("tls", tls.NewListener(ln, b.cfg.TLS)); err != nil {
			return err
		}
	}
	if b.cfg.PlainAddr != "" {
		ln, err := net.Listen("tcp", b.cfg.PlainAddr)
		if err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
		if err := b.addListener("plain", ln); err != nil {
			return err
		}
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	return nil
}

func (b *Broker) addListener(id string, ln net.Listener) error {
	b.mu.Lock()
	b.addrs[id] = ln.Addr()
	b.mu.Unlock()
	if err := b.srv.AddListener(&countingListener{Net: listeners.NewNet(id, ln), h: b.hook}); err != nil {
		_ = ln.Close()
		return fmt.Errorf("mqtt: %w", err)
	}
	b.log.Info("mqtt listening", "listener", id, "addr", ln.Addr().String())
	return nil
}

// TLSAddr returns the TLS listener's address (nil if off).
func (b *Broker) TLSAddr() net.Addr { return b.addr("tls") }

// PlainAddr returns the plain listener's address (nil if off).
func (b *Broker) PlainAddr() net.Addr { return b.addr("plain") }

func (b *Broker) addr(id string) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[id]
}

// Stats returns the broker's counters.
func (b *Broker) Stats() *Stats { return &b.stats }

// ACL returns the device-side topic mapping in force.
func (b *Broker) ACL() ACL { return b.acl }

// Connected reports whether endpoint has a connected session.
func (b *Broker) Connected(endpoint string) bool {
	b.hook.mu.Lock()
	defer b.hook.mu.Unlock()
	return b.hook.connected[endpoint] > 0
}

// Deliver publishes a message to endpoint's device-side topic (which must
// lie in the subscribe mapping, e.g. "cmd/reboot"). A device subscribed
// with a persistent session receives QoS 1/2 messages on its next connect
// if it sleeps now.
func (b *Broker) Deliver(endpoint, topic string, payload []byte, qos byte, retain bool) error {
	if !validEndpointName(endpoint) || !b.acl.CanReceive(topic) {
		b.stats.TopicDenied.Add(1)
		return fmt.Errorf("%w: %q for %q", ErrTopic, topic, endpoint)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := b.srv.Publish(mount(endpoint, topic), payload, retain, qos); err != nil {
		return fmt.Errorf("mqtt: deliver: %w", err)
	}
	b.stats.Delivered.Add(1)
	return nil
}

// Close stops the listeners and disconnects every device.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	return nil
}

// countingListener wraps a mochi listener so connections that fail before
// a session exists (malformed or oversized CONNECT) are counted too.
type countingListener struct {
	*listeners.Net
	h *hook
}

// Serve implements listeners.Listener.
func (l *countingListener) Serve(establish listeners.EstablishFn) {
	l.Net.Serve(func(id string, c net.Conn) error {
		b := l.h.b
		if ok, perSource := b.pending.admit(c); !ok {
			if perSource {
				b.stats.PendingConnectRefusedSource.Add(1)
			} else {
				b.stats.PendingConnectRefused.Add(1)
			}
			b.warn("mqtt connection refused: too many without CONNECT", "peer", c.RemoteAddr().String(), "per_source", perSource)
			_ = c.Close()
			return nil
		}
		defer b.pending.release(c)
		// mochi replaces this deadline with the keep-alive one after
		// CONNECT (or clears it for keep alive 0).
		_ = c.SetDeadline(time.Now().Add(l.h.b.cfg.ConnectTimeout))
		// establish returns the error that ended the connection, before or
		// after the session was set up; count malformed and oversized ones.
		err := establish(id, c)
		l.h.classify(err)
		return err
	})
}

// levelFilter drops records below min (mochi logs every connection at
// info; the broker writes its own lifecycle lines).
type levelFilter struct {
	h   slog.Handler
	min slog.Level
}

func (f *levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.h.Enabled(ctx, l)
}
func (f *levelFilter) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }
func (f *levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return &levelFilter{h: f.h.WithAttrs(a), min: f.min}
}
func (f *levelFilter) WithGroup(g string) slog.Handler {
	return &levelFilter{h: f.h.WithGroup(g), min: f.min}
}
