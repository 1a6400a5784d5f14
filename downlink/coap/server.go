// Package coap terminates CoAP over DTLS 1.2 (RFC 7252 section 9) for the
// edge bridge's endpoints: pion/dtls v3 with PSK (identity → endpoint) and
// ECDSA P-256 certificates (CN → endpoint, verified against the site CA),
// Connection ID (RFC 9146) for devices whose NAT mapping changes, and
// go-coap v3 for CoAP (observe, block-wise). Each authenticated DTLS
// connection is a Session bound to one registered endpoint; requests from
// it reach Config.Handler, and the bridge sends requests to the device with
// Session.Do.
package coap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// Handler serves one CoAP request from an authenticated endpoint. It runs
// on the session's receive path: long waits delay that device's other
// messages.
type Handler func(s *Session, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message)

// Config configures a Server.
type Config struct {
	// ListenAddr is the UDP address for DTLS, e.g. "0.0.0.0:5684".
	ListenAddr string
	// Registry resolves PSK identities and certificate CNs to endpoints.
	Registry *registry.Registry
	// ClientCAs verifies endpoint certificates (the site CA); nil disables
	// certificate authentication.
	ClientCAs *x509.CertPool
	// Certificate is the bridge's server certificate for the ECDHE_ECDSA
	// suites; nil offers PSK suites only.
	Certificate *tls.Certificate
	// CipherSuites allowed; DefaultSuites when nil (ECDSA ones are dropped
	// without a Certificate).
	CipherSuites []dtls.CipherSuiteID
	// Handler serves requests from devices; nil answers 4.04.
	Handler Handler
	// OnSession is called when an endpoint's session comes up (up=true)
	// and when it ends.
	OnSession func(s *Session, up bool)
	// OnReset is called with the message ID of an RST a device sent for a
	// message that awaited no acknowledgement (a NON observe notification,
	// RFC 7641 section 3.6); nil ignores them.
	OnReset func(s *Session, mid int32)
	// FlightInterval, HandshakeTimeout, IdleTimeout, MaxMessageSize: zero
	// means the Default… constant.
	FlightInterval, HandshakeTimeout, IdleTimeout time.Duration
	MaxMessageSize                                uint32
	// MaxPendingHandshakes and MaxPendingPerSource cap handshakes in
	// progress (after a valid cookie, before the endpoint is
	// authenticated) in total and per source IP; PendingTimeout closes one
	// still pending after that long. Zero means the Default… constant.
	MaxPendingHandshakes, MaxPendingPerSource int
	PendingTimeout                            time.Duration
	// HandshakeBudget is the share of GOMAXPROCS that cookie-verified
	// handshakes may use: they start at the rate that affords, measured
	// (admission.go), below the caps above. Zero means
	// DefaultHandshakeBudget; negative admits up to the caps only.
	HandshakeBudget float64
	// MaxBlockTransfers bounds one session's block-wise (RFC 7959)
	// transfers being reassembled at once (go-coap's default is 4096, each
	// up to MaxMessageSize); zero means DefaultMaxBlockTransfers. Over it
	// a new transfer fails (counted in CoAPErrors).
	MaxBlockTransfers int
	// CookieRotation is how often the HelloVerifyRequest cookie secret
	// changes; zero means DefaultCookieRotation.
	CookieRotation time.Duration
	// Rate (requests/s) and Burst limit each endpoint; zero means
	// DefaultRate/DefaultBurst, negative Rate disables the limit.
	Rate  float64
	Burst int
	// ParkAfter parks a session idle (no message either way) for that
	// long, with nothing in flight and Busy false: its DTLS state is kept,
	// its conn, goroutines and buffers are not, and the next record from
	// the device or request from the bridge resumes it without a handshake
	// (park.go). Zero means DefaultParkAfter; negative never parks.
	ParkAfter time.Duration
	// Busy reports that an endpoint's session holds state outside this
	// package (the bridge's observations) and must not be parked; nil
	// means never busy.
	Busy func(name string) bool
	// StateFile keeps DTLS sessions across a restart (store.go): Close
	// writes them there and New restores them, so devices resume without a
	// handshake; written every SaveInterval too (zero: DefaultSaveInterval).
	// Encrypted with the key in StateKeyFile (mode 0600, created if
	// missing). Empty disables it (Close then tells devices with
	// close_notify). At most MaxSavedSessions (zero:
	// DefaultMaxSavedSessions) are kept.
	StateFile, StateKeyFile string
	SaveInterval            time.Duration
	MaxSavedSessions        int
	// Logger receives JSON-able structured lines; nil discards.
	Logger *slog.Logger
}

// Stats are the server's counters (safe for concurrent use).
type Stats struct {
	// HandshakesOK counts authenticated sessions.
	HandshakesOK atomic.Uint64
	// HandshakeFailures counts failed handshakes (wrong PSK, bad
	// certificate, garbage, timeout).
	HandshakeFailures atomic.Uint64
	// UnknownIdentity counts PSK identities or CNs matching no endpoint.
	UnknownIdentity atomic.Uint64
	// CertRefused counts (of UnknownIdentity) site-CA certificates whose CN
	// names an endpoint that was issued another certificate since
	// (replaced) or that are on the site CRL.
	CertRefused atomic.Uint64
	// Superseded counts sessions closed at once because a later
	// handshake (or resumption) of the same endpoint already won.
	Superseded atomic.Uint64
	// Rebinds counts sessions whose peer address changed while the DTLS
	// session continued (Connection ID, RFC 9146): NAT rebinding without a
	// new handshake.
	Rebinds atomic.Uint64
	// Requests counts CoAP requests from devices; RateLimited those answered
	// 4.29 (RFC 8516) by the per-endpoint limit.
	Requests, RateLimited atomic.Uint64
	// CoAPErrors counts errors go-coap reported (malformed or oversized
	// messages, failed writes).
	CoAPErrors atomic.Uint64
	// Garbage counts datagrams dropped before pion by the record sanity
	// check (see guard.go for what it covers), GarbageByReason by
	// GarbageReason; Backlog new peers dropped because the accept queue
	// was full.
	Garbage         atomic.Uint64
	GarbageByReason [numGarbageReasons]atomic.Uint64
	Backlog         atomic.Uint64
	// HelloVerifySent counts stateless HelloVerifyRequests (ClientHellos
	// without a valid cookie), CookieInvalid ClientHellos whose cookie was
	// wrong or expired.
	HelloVerifySent, CookieInvalid atomic.Uint64
	// PendingRefused and PendingRefusedSource count cookie-verified
	// handshakes refused by MaxPendingHandshakes and MaxPendingPerSource;
	// PendingExpired those closed by PendingTimeout.
	PendingRefused, PendingRefusedSource, PendingExpired atomic.Uint64
	// BudgetDeferred counts cookie-verified ClientHellos dropped because
	// handshakes were starting faster than the CPU budget affords (the
	// device retransmits; admission.go).
	BudgetDeferred atomic.Uint64
	// Parked counts sessions parked (park.go), Resumed parked sessions
	// resumed without a handshake, ResumeFailures those that could not be,
	// ParkedExpired parked sessions dropped after IdleTimeout.
	Parked, Resumed, ResumeFailures, ParkedExpired atomic.Uint64
	// StateRestored counts sessions restored from the state file,
	// StateSkipped entries dropped (expired, endpoint removed or its
	// credentials changed), StateRefused state files refused as a whole
	// (see Server.StateError); StateSaved is the entries last written.
	StateRestored, StateSkipped, StateRefused, StateSaved atomic.Uint64
}

// Server is the DTLS/CoAP listener.
type Server struct {
	cfg   Config
	log   *slog.Logger
	warn  *rate.Limiter // rate-limits Warn lines about peer misbehaviour
	guard *guardListener
	srv   *dtlsserver.Server
	done  chan struct{}
	quit  chan struct{} // closed by Close
	qonce sync.Once
	wg    sync.WaitGroup // the parker
	// serving/closing (under mu) order Serve's wg.Add before Close's
	// wg.Wait, or skip it: Close may run before Serve has started.
	closing bool
	// opening counts onNewConn calls past their closing check (Add under
	// mu while !closing): Close waits for them, so the close_notify to a
	// session they supersede leaves before the socket is shut.
	opening sync.WaitGroup
	// connSeq numbers completed handshakes and resumptions (conn.seq).
	connSeq atomic.Uint64

	dtlsOpts   []dtls.ServerOption // for a new peer's handshake
	resumeOpts []dtls.Option       // for resuming a parked session
	resumed    chan *conn          // resumed conns for go-coap's accept
	stateKey   []byte              // StateFile's key; nil without a state file
	stateErr   error               // why the state file was refused at New

	mu       sync.Mutex
	sessions map[string]*Session       // guarded by mu; by endpoint name
	parked   map[string]*parkedSession // guarded by mu; by endpoint name
	limits   map[string]*rate.Limiter  // guarded by mu; survive reconnects

	// Stats holds the counters.
	Stats Stats
}

// New creates the server and binds its UDP socket; call Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, ErrNoCredentials
	}
	if cfg.FlightInterval == 0 {
		cfg.FlightInterval = DefaultFlightInterval
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.MaxPendingHandshakes == 0 {
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	if cfg.MaxPendingPerSource == 0 {
		cfg.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.HandshakeBudget == 0 {
		cfg.HandshakeBudget = DefaultHandshakeBudget
	}
	if cfg.MaxBlockTransfers == 0 {
		cfg.MaxBlockTransfers = DefaultMaxBlockTransfers
	}
	if cfg.CookieRotation == 0 {
		cfg.CookieRotation = DefaultCookieRotation
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = DefaultParkAfter
	}
	if cfg.SaveInterval == 0 {
		cfg.SaveInterval = DefaultSaveInterval
	}
	if cfg.MaxSavedSessions == 0 {
		cfg.MaxSavedSessions = DefaultMaxSavedSessions
	}
	var stateKey []byte
	if cfg.StateFile != "" {
		if cfg.StateKeyFile == "" {
			return nil, fmt.Errorf("coap: a session state file (%s) needs a key file", cfg.StateFile)
		}
		k, err := LoadOrCreateStateKey(cfg.StateKeyFile)
		if err != nil {
			return nil, err
		}
		stateKey = k
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "coap"),
		warn:     rate.NewLimiter(2, 20),
		done:     make(chan struct{}),
		quit:     make(chan struct{}),
		resumed:  make(chan *conn),
		sessions: map[string]*Session{},
		parked:   map[string]*parkedSession{},
		stateKey: stateKey,
		limits:   map[string]*rate.Limiter{},
	}
	suites := cfg.CipherSuites
	if suites == nil {
		suites = DefaultSuites
	}
	if cfg.Certificate == nil {
		var psk []dtls.CipherSuiteID
		for _, id := range suites {
			if id == dtls.TLS_PSK_WITH_AES_128_CCM_8 || id == dtls.TLS_PSK_WITH_AES_128_GCM_SHA256 || id == dtls.TLS_PSK_WITH_AES_128_CCM || id == dtls.TLS_PSK_WITH_AES_128_CBC_SHA256 {
				psk = append(psk, id)
			}
		}
		suites = psk
	}
	opts := []dtls.ServerOption{
		dtls.WithCipherSuites(suites...),
		dtls.WithPSK(s.pskFor),
		dtls.WithPSKIdentityHint(nil),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(cidLen)),
		dtls.WithFlightInterval(cfg.FlightInterval),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		// The guard did the cookie exchange statelessly (cookie.go); pion
		// takes the cookie ClientHello as the first message (the patch in
		// third_party/pion-dtls).
		dtls.WithInsecureSkipVerifyHello(true),
		dtls.WithLoggerFactory(pionLogs),
	}
	s.resumeOpts = []dtls.Option{dtls.WithLoggerFactory(pionLogs), dtls.WithCipherSuites(suites...), dtls.WithPSK(s.pskFor),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(cidLen)), dtls.WithFlightInterval(cfg.FlightInterval),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret)}
	if cfg.Certificate != nil && hasECDSA(suites) {
		// pion refuses a certificate without a certificate suite.
		opts = append(opts, dtls.WithCertificates(*cfg.Certificate))
		s.resumeOpts = append(s.resumeOpts, dtls.WithCertificates(*cfg.Certificate))
	}
	if cfg.ClientCAs != nil {
		opts = append(opts, dtls.WithClientCAs(cfg.ClientCAs), dtls.WithClientAuth(dtls.VerifyClientCertIfGiven))
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("coap: listen address: %w", err)
	}
	pc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("coap: listen %s: %w", cfg.ListenAddr, err)
	}
	// A restart storm brings every device's next record at once (resumes,
	// ClientHellos): a 4 MB receive buffer (best effort, capped by the
	// kernel's net.core.rmem_max) keeps that burst instead of dropping it
	// into the devices' retransmission timers.
	_ = pc.SetReadBuffer(socketBuffer)
	guard := newGuardListener(pc, s, cidLen, guardLimits{maxPending: cfg.MaxPendingHandshakes,
		maxPendingPerSource: cfg.MaxPendingPerSource, pendingTimeout: cfg.PendingTimeout,
		budget: cfg.HandshakeBudget * float64(runtime.GOMAXPROCS(0))},
		newCookieJar(cfg.CookieRotation, time.Now))
	s.guard = guard
	s.dtlsOpts = opts
	if s.stateKey != nil {
		s.loadState()
	}
	s.srv = coapdtls.NewServer(
		options.WithHandlerFunc(udpclient.HandlerFunc(s.handle)),
		options.WithOnNewConn(s.onNewConn),
		options.WithErrors(s.onError),
		options.WithMaxMessageSize(cfg.MaxMessageSize),
		options.WithBlockwise(true, blockwise.SZX1024, time.Minute),
		options.WithBlockwiseReceivingMessagesCacheMaxEntries(cfg.MaxBlockTransfers),
		options.WithDTLSHandshakeTimeout(cfg.HandshakeTimeout),
		options.WithInactivityMonitor(cfg.IdleTimeout, func(cc *udpclient.Conn) { _ = cc.Close() }),
		options.WithRequestMonitor(udpclient.RequestMonitorFunc(s.monitor)),
	)
	return s, nil
}

// PendingHandshakes returns the handshakes in progress after a valid
// cookie (bounded by MaxPendingHandshakes).
func (s *Server) PendingHandshakes() int { return s.guard.Pending() }

// Addr returns the bound UDP address.
func (s *Server) Addr() net.Addr { return s.guard.Addr() }

// Serve accepts sessions until Close. It returns nil after Close.
func (s *Server) Serve() error {
	defer close(s.done)
	if s.cfg.ParkAfter > 0 || s.stateKey != nil {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return nil
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.parker()
	}
	return s.srv.Serve(&listener{s: s})
}

// Close closes every session, then stops accepting and closes the socket.
// Sessions go first so each device gets its DTLS close_notify while the
// socket is still open: an idle device learns of a bridge restart at once
// (TestCloseNotifiesDevices) instead of at its next exchange.
func (s *Server) Close() {
	first := false
	s.qonce.Do(func() { close(s.quit); first = true })
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.opening.Wait()
	s.wg.Wait()
	if first && s.stateKey != nil {
		// Keep the sessions for the next start: park every one (no
		// close_notify) and write them out; this server resumes none of
		// them again (each saved state is used once).
		for _, x := range s.Sessions() {
			s.parkNow(x, true)
		}
		if err := s.saveState(); err != nil {
			s.log.Error("dtls session state not saved: devices will handshake again", "err", err.Error())
		}
		s.mu.Lock()
		ps := s.parked
		s.parked = map[string]*parkedSession{}
		s.mu.Unlock()
		for _, p := range ps {
			s.guard.dropParked(p)
		}
	} else if first {
		s.notifyParked()
	}
	s.mu.Lock()
	ss := make([]*Session, 0, len(s.sessions))
	for _, x := range s.sessions {
		ss = append(ss, x)
	}
	s.mu.Unlock()
	for _, x := range ss {
		endConn(x.Conn)
	}
	s.srv.Stop()
}

// endConn closes a session's go-coap conn and its DTLS conn at once: the
// device's close_notify leaves now, not when go-coap's goroutine gets to
// it.
func endConn(cc *udpclient.Conn) {
	_ = cc.Close()
	if nc := cc.NetConn(); nc != nil {
		_ = nc.Close()
	}
}

// Wait blocks until Serve has returned.
func (s *Server) Wait() { <-s.done }

// Session returns the session of an endpoint, resuming it if it is
// parked, or nil. To look without resuming, use Info.
func (s *Server) Session(name string) *Session {
	s.mu.Lock()
	sess, p := s.sessions[name], s.parked[name]
	s.mu.Unlock()
	if sess != nil || p == nil {
		return sess
	}
	return s.wake(p)
}

// SessionInfo describes an endpoint's session, live or parked.
type SessionInfo struct {
	LastSeen          time.Time
	BytesIn, BytesOut uint64
	Parked            bool
}

// Info describes the endpoint's session without resuming a parked one;
// ok is false when it has none.
func (s *Server) Info(name string) (info SessionInfo, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x := s.sessions[name]; x != nil {
		return SessionInfo{LastSeen: x.LastSeen(), BytesIn: x.BytesIn.Load(), BytesOut: x.BytesOut.Load()}, true
	}
	if p := s.parked[name]; p != nil {
		return SessionInfo{LastSeen: time.Unix(0, p.lastSeen), BytesIn: p.bytesIn, BytesOut: p.bytesOut, Parked: true}, true
	}
	return info, false
}

// Count returns the live and the parked sessions.
func (s *Server) Count() (live, parked int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions), len(s.parked)
}

// CloseSession ends the endpoint's DTLS session, live or parked, if any
// (endpoint removed or its credentials changed); it reports whether there
// was one.
func (s *Server) CloseSession(name string) bool {
	s.mu.Lock()
	sess, p := s.sessions[name], s.parked[name]
	delete(s.parked, name)
	s.mu.Unlock()
	if p != nil {
		s.guard.dropParked(p)
	}
	if sess == nil {
		return p != nil
	}
	endConn(sess.Conn)
	return true
}

// Sessions returns the live sessions (not the parked ones).
func (s *Server) Sessions() []*Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Session, 0, len(s.sessions))
	for _, x := range s.sessions {
		out = append(out, x)
	}
	return out
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (s *Server) warnf(msg string, args ...any) {
	if s.warn.Allow() {
		s.log.Warn(msg, args...)
	}
}

// garbage counts and logs (rate-limited) a datagram the guard dropped.
func (s *Server) garbage(r GarbageReason, from net.Addr, n int) {
	s.Stats.Garbage.Add(1)
	if r > 0 && r < numGarbageReasons {
		s.Stats.GarbageByReason[r].Add(1)
	}
	s.warnf("garbage DTLS datagram dropped", "peer", from.String(), "reason", r.String(), "bytes", n)
}

func (s *Server) onError(err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	s.Stats.CoAPErrors.Add(1)
	s.warnf("coap error", "err", err.Error())
}
