// Package proxy is the edge bridge's CoAP proxy between DTLS endpoints and
// the VPN, both ways, each endpoint on its own VPN address:
//
//   - device → central: a request from an endpoint's DTLS session is sent
//     to the central CoAP service (or, with Proxy-Uri, to a destination the
//     endpoint's allow-list permits) from the endpoint's address in ipstack;
//     the response (and observe notifications) go back to the device.
//   - central → device: plain CoAP to <endpoint address>:5683 in ipstack is
//     relayed over the endpoint's DTLS session. A sleeping endpoint's
//     requests wait in a bounded queue until it next talks (queue mode);
//     expired ones are answered 5.04 Gateway Timeout (RFC 7252 section
//     5.9.3.5).
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack"
)

// Defaults for Config fields left zero.
const (
	DefaultQueueLen       = 8
	DefaultQueueTTL       = 60 * time.Second
	DefaultRequestTimeout = 20 * time.Second
)

// Config configures a Proxy.
type Config struct {
	// Stack holds the endpoint addresses.
	Stack *ipstack.Stack
	// Registry lists the endpoints.
	Registry *registry.Registry
	// Central is the central CoAP service device requests go to.
	Central netip.AddrPort
	// Hosts names Proxy-Uri hosts that are not IPv4 literals.
	Hosts map[string]netip.Addr
	// QueueLen bounds each sleeping endpoint's queue; QueueTTL is how long a
	// queued request waits before 5.04. RequestTimeout bounds one exchange.
	QueueLen                 int
	QueueTTL, RequestTimeout time.Duration
	// MaxObservations bounds each endpoint's observations per direction;
	// ObserveAckTimeout is the first retransmission timeout of CON
	// notifications to central observers (doubling, MAX_RETRANSMIT 4).
	MaxObservations   int
	ObserveAckTimeout time.Duration
	// BlockSZX is the block size towards central peers (RFC 7959; 0..6 =
	// 16..1024 bytes); MaxBody bounds a reassembled Block1 upload;
	// BlockTimeout how long a partial transfer is kept.
	BlockSZX     blockwise.SZX
	MaxBody      int
	BlockTimeout time.Duration
	// Spool is the CoAP store-and-forward queue (nil: every path is
	// passthrough). Modes maps request paths to ModeSpool or
	// ModePassthrough (exact, or a prefix ending in "*"; default
	// {DefaultTelemetryPath: spool}); only POST/PUT are spooled.
	Spool *spool.Spool
	Modes map[string]Mode
	// RetryAfter is the Max-Age of a 5.03 answered while the uplink is
	// down or the spool refuses (DefaultRetryAfter if zero).
	RetryAfter time.Duration
	// UplinkUp reports whether the uplink is up (nil: always).
	UplinkUp func() bool
	// NStart bounds each endpoint's exchanges in flight per direction
	// (DefaultNStart); MaxInFlight those of the whole bridge
	// (DefaultMaxInFlight). A request over either is answered 5.03 with
	// Max-Age OverloadMaxAge (DefaultOverloadMaxAge). DedupPerEndpoint
	// bounds the central requests remembered per endpoint for
	// deduplication (DefaultDedupPerEndpoint; exchange.go).
	NStart, MaxInFlight, DedupPerEndpoint int
	OverloadMaxAge                        time.Duration
	// Now is the clock of deduplication (nil: time.Now).
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Stats are the proxy's counters.
type Stats struct {
	// Upstream counts device → central requests forwarded; UpstreamErrors
	// those that failed (answered 5.02/5.04); Denied Proxy-Uri requests
	// refused by the allow-list (4.03) or unparsable (4.02/5.05).
	Upstream, UpstreamErrors, Denied atomic.Uint64
	// Downstream counts central → device requests relayed; Queued those
	// that waited for a sleeping device; Expired those answered 5.04;
	// QueueFull those refused 5.03 because the queue was full.
	Downstream, Queued, Expired, QueueFull atomic.Uint64
	// Malformed counts undecodable datagrams sent to endpoint addresses.
	Malformed atomic.Uint64
	// Notifications counts observe notifications relayed to devices;
	// NotificationsDown those relayed to central observers.
	Notifications, NotificationsDown atomic.Uint64
	// ObservationsDown and ObservationsUp count observations registered
	// central → device and device → central; ObserveRefused those over
	// MaxObservations (answered once); ObserveCancelled those ended by
	// Observe:1 or RST; ObserveTimeouts central observers dropped for not
	// acknowledging notifications.
	ObservationsDown, ObservationsUp, ObserveRefused, ObserveCancelled, ObserveTimeouts atomic.Uint64
	// BlockUploads counts Block1 uploads reassembled from central peers;
	// BlockDownloads bodies sent as Block2; BlockErrors transfers refused
	// (out of order, too large, bad option).
	BlockUploads, BlockDownloads, BlockErrors atomic.Uint64
	// UpstreamReplaced counts upstream clients dropped and re-dialled
	// (closed underneath or left unusable by go-coap). UpstreamRetransmits
	// counts CONs resent by the upstream table (uptable.go);
	// UpstreamUnmatched answers it dropped (late: the exchange had ended,
	// or foreign: no such token from that peer).
	UpstreamReplaced, UpstreamRetransmits, UpstreamUnmatched atomic.Uint64
	// Spooled counts device requests stored in the CoAP spool (answered
	// 2.04); SpoolRefused those the spool refused (full, disk; answered
	// 5.03); Unavailable every 5.03 with Max-Age answered to a device
	// (uplink down, passthrough failure, spool refused).
	Spooled, SpoolRefused, Unavailable atomic.Uint64
	// Forwarded counts spooled requests central answered; ForwardRetransmits
	// their retransmissions; ForwardCentralErrors 5.xx answers (retried);
	// ForwardRejected 4.xx or RST answers (dropped); ForwardDropped
	// undecodable records.
	Forwarded, ForwardRetransmits, ForwardCentralErrors, ForwardRejected, ForwardDropped atomic.Uint64
	// Removed counts endpoints removed by reload.
	Removed atomic.Uint64
	// Demuxed counts datagrams the demultiplexer handed to an endpoint
	// (those for an address with no endpoint are ipstack's
	// Stats.Route.NoEndpoint).
	Demuxed atomic.Uint64
	// Duplicates counts central requests received again within
	// EXCHANGE_LIFETIME (not relayed again); DuplicatesAnswered those
	// answered with the recorded answer (the rest arrived while the first
	// copy was in progress and were dropped); DedupEvicted requests
	// forgotten early because an endpoint's table was full.
	Duplicates, DuplicatesAnswered, DedupEvicted atomic.Uint64
	// OverloadEndpoint counts requests answered 5.03 because their
	// endpoint had NStart exchanges in flight in that direction;
	// OverloadBridge because the bridge had MaxInFlight.
	OverloadEndpoint, OverloadBridge atomic.Uint64
}

// Proxy relays CoAP between DTLS sessions and ipstack.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	warn    *rate.Limiter
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	session func(name string) *coap.Session

	mu  sync.Mutex
	eps map[string]*endpointState // guarded by mu; by endpoint name

	inFlight atomic.Int64 // exchanges in flight, both directions (exchange.go)
	up       *upTable     // device → central exchanges (uptable.go)

	dmu    sync.RWMutex
	byAddr map[netip.Addr]*endpointState // guarded by dmu: the demultiplexer's map (demux.go)

	// Stats holds the counters.
	Stats Stats
}

// New creates a Proxy. Call SetSessions before traffic flows, and
// AddEndpoint for every endpoint (Start does it for the whole registry).
func New(cfg Config) (*Proxy, error) {
	if cfg.Stack == nil || cfg.Registry == nil {
		return nil, ErrConfig
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueTTL == 0 {
		cfg.QueueTTL = DefaultQueueTTL
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxObservations == 0 {
		cfg.MaxObservations = DefaultMaxObservations
	}
	if cfg.ObserveAckTimeout == 0 {
		cfg.ObserveAckTimeout = DefaultObserveAckTimeout
	}
	if cfg.BlockSZX == 0 || cfg.BlockSZX > blockwise.SZX1024 {
		cfg.BlockSZX = DefaultBlockSZX
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.BlockTimeout == 0 {
		cfg.BlockTimeout = DefaultBlockTimeout
	}
	if cfg.Modes == nil {
		cfg.Modes = map[string]Mode{DefaultTelemetryPath: ModeSpool}
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.NStart <= 0 {
		cfg.NStart = DefaultNStart
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.OverloadMaxAge <= 0 {
		cfg.OverloadMaxAge = DefaultOverloadMaxAge
	}
	if cfg.DedupPerEndpoint <= 0 {
		cfg.DedupPerEndpoint = DefaultDedupPerEndpoint
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := cfg.Stack.AddPrefix(cfg.Registry.Prefix()); err != nil {
		return nil, fmt.Errorf("proxy: route the site prefix %s: %w", cfg.Registry.Prefix(), err)
	}
	if err := routeIPv6(cfg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg: cfg, log: cfg.Logger.With("component", "proxy"), warn: rate.NewLimiter(2, 20),
		ctx: ctx, cancel: cancel, eps: map[string]*endpointState{}, byAddr: map[netip.Addr]*endpointState{},
		session: func(string) *coap.Session { return nil }, up: newUpTable(),
	}
	cfg.Stack.HandleUDP(coapPort, p.demux)
	cfg.Stack.HandleUDP(UpstreamPort, p.demuxUp)
	p.wg.Add(1)
	go p.runRetransmit()
	return p, nil
}

// SetSessions tells the proxy how to find an endpoint's live DTLS session
// (coap.Server.Session).
func (p *Proxy) SetSessions(f func(name string) *coap.Session) { p.session = f }

// Start adds every registered endpoint.
func (p *Proxy) Start() error {
	for _, ep := range p.cfg.Registry.List() {
		if err := p.AddEndpoint(ep); err != nil {
			return err
		}
	}
	return nil
}

// Close stops all listeners and upstream clients.
func (p *Proxy) Close() {
	p.cancel()
	p.cfg.Stack.HandleUDP(coapPort, nil)
	p.cfg.Stack.HandleUDP(UpstreamPort, nil)
	p.dmu.Lock()
	p.byAddr = map[netip.Addr]*endpointState{}
	p.dmu.Unlock()
	p.mu.Lock()
	eps := p.eps
	p.eps = map[string]*endpointState{}
	p.mu.Unlock()
	for _, e := range eps {
		p.endObservations(e, true)
		e.close()
	}
	p.wg.Wait()
}

func (p *Proxy) warnf(msg string, args ...any) {
	if p.warn.Allow() {
		p.log.Warn(msg, args...)
	}
}

// Queued returns how many central → device requests wait for an endpoint.
func (p *Proxy) Queued(name string) int {
	p.mu.Lock()
	e := p.eps[name]
	p.mu.Unlock()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// OnSession is coap.Config.OnSession: a device that comes up gets its
// queued requests; when its session ends, its observations end.
func (p *Proxy) OnSession(s *coap.Session, up bool) {
	if up {
		p.flush(s.Endpoint.Name)
		return
	}
	p.sessionDown(s)
}

// HandleDevice is coap.Config.Handler: device → central.
func (p *Proxy) HandleDevice(s *coap.Session, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	e := p.endpoint(s.Endpoint.Name)
	if e != nil {
		p.flushEndpoint(e) // the device is awake: deliver what waited
	}
	dst := p.cfg.Central
	path, err := r.Path()
	if err != nil {
		path = "/"
	}
	var query []string
	if puri, err := r.Options().GetString(message.ProxyURI); err == nil {
		t, err := ParseProxyURI(puri, p.cfg.Hosts)
		if err != nil {
			p.Stats.Denied.Add(1)
			p.warnf("bad Proxy-Uri", "endpoint", s.Endpoint.Name, "err", err.Error())
			code := codes.BadOption
			if errors.Is(err, ErrUnknownHost) {
				code = codes.ProxyingNotSupported
			}
			_ = w.SetResponse(code, message.TextPlain, nil)
			return
		}
		// The allow-list as reloaded, not as it was at the handshake.
		ep, ok := p.cfg.Registry.ByName(s.Endpoint.Name)
		if !ok || !ep.Allows(t.Host, t.Addr) {
			p.Stats.Denied.Add(1)
			p.warnf("Proxy-Uri destination not allowed", "endpoint", s.Endpoint.Name, "dst", t.Addr.String())
			_ = w.SetResponse(codes.Forbidden, message.TextPlain, nil)
			return
		}
		dst, path = t.Addr, t.Path
		if t.Query != "" {
			query = append(query, t.Query)
		}
	} else if !dst.IsValid() {
		_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, nil)
		return
	} else if p.modeOf(r, path) == ModeSpool {
		p.spoolDevice(s.Endpoint.Name, w, r, path)
		return
	}
	if !p.uplinkUp() {
		p.unavailable(w) // passthrough, uplink down: retry after Max-Age
		return
	}
	if e == nil {
		p.Stats.UpstreamErrors.Add(1)
		_ = w.SetResponse(codes.BadGateway, message.TextPlain, nil)
		return
	}
	if !p.acquire(e, dirUp) {
		p.overloadDevice(s.Endpoint.Name, w)
		return
	}
	defer p.release(e, dirUp)
	if upPlain(r) {
		p.Stats.Upstream.Add(1)
		// RequestTimeout is the exchange's deadline in the table (no timer
		// per request); p.ctx ends it when the proxy closes.
		c, err := p.upExchange(p.ctx, e, dst, r, path, query)
		if err != nil {
			p.Stats.UpstreamErrors.Add(1)
			p.warnf("upstream request failed", "endpoint", s.Endpoint.Name, "dst", dst.String(), "err", err.Error())
			p.unavailable(w)
			return
		}
		writeContent(w, c)
		return
	}
	up, uc, err := p.upstream(s.Endpoint, dst)
	if err != nil {
		p.Stats.UpstreamErrors.Add(1)
		p.warnf("upstream dial failed", "endpoint", s.Endpoint.Name, "err", err.Error())
		_ = w.SetResponse(codes.BadGateway, message.TextPlain, nil)
		return
	}
	if v, err := r.Observe(); err == nil && r.Code() == codes.GET {
		switch v {
		case 0:
			if p.observeUp(s, w, r, uc, path, query) {
				return
			}
		case 1:
			p.cancelUp(s, r.Token())
		}
	}
	p.Stats.Upstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	c, err := up.exchange(ctx, dst, r, path, query)
	if err != nil {
		p.Stats.UpstreamErrors.Add(1)
		p.warnf("upstream request failed", "endpoint", s.Endpoint.Name, "dst", dst.String(), "err", err.Error())
		p.unavailable(w)
		return
	}
	writeContent(w, c)
}

// skipOpts are options a proxy must not copy hop to hop (RFC 7252 section
// 5.7.2, RFC 7959 section 2.10, RFC 7641 section 2).
var skipOpts = map[message.OptionID]bool{
	message.ProxyURI: true, message.ProxyScheme: true, message.URIHost: true, message.URIPort: true,
	message.Block1: true, message.Block2: true, message.Size1: true, message.Size2: true, message.Observe: true,
}

// copyRequest makes req a copy of r for the next hop.
func copyRequest(req, r *pool.Message, path string, query []string) {
	req.SetCode(r.Code())
	var opts message.Options
	for _, o := range r.Options() {
		if skipOpts[o.ID] || o.ID == message.URIPath || (len(query) > 0 && o.ID == message.URIQuery) {
			continue
		}
		opts = append(opts, o)
	}
	req.ResetOptionsTo(opts)
	_ = req.SetPath(path)
	for _, q := range query {
		req.AddQuery(q)
	}
	if b := readBody(r); b != nil {
		req.SetBody(bytes.NewReader(b))
	}
}

func readBody(m *pool.Message) []byte {
	if m.Body() == nil {
		return nil
	}
	b, err := m.ReadBody()
	if err != nil {
		return nil
	}
	return b
}

// writeContent answers a device request with c.
func writeContent(w *responsewriter.ResponseWriter[*udpclient.Conn], c content) {
	cf := message.TextPlain
	if c.hasCF {
		cf = c.cf
	}
	var body io.ReadSeeker
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	_ = w.SetResponse(c.code, cf, body, c.opts...)
}
