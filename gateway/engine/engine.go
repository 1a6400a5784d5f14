// Package engine is the gateway's session engine: it runs the uplink's
// responder stack (uplink/l2tpipsec: IKEv1 responder, ESP transport, L2TP LNS,
// one PPP server per session) on the configured listen addresses and plugs
// every session into the gateway through server.Env: Main Mode pacing,
// PSK/certificate checks, PPP authentication and addressing, the session
// table and router, metrics, and Delete/StopCCN to every peer on shutdown.
//
//	peer --UDP 500/4500--> admitConn (junk filter) --> l2tpipsec.Server (pacing at MM3: Admit)
//	      (IKE → ESP → L2TP → PPP) --OnSession--> Session --Register--> route table
//	      packets: Session handler --> Router.FromSession; Router --> Session.WritePacket
//
// An optional raw L2TP listener (no IPsec, off by default) serves peers that
// bring their own IPsec, and lets xl2tpd be tested as a LAC.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/gateway/admission"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Config holds the engine's own knobs; everything else comes from the
// gateway configuration through server.Env.
type Config struct {
	// IKE tunes lifetimes, dead peer detection and retransmission (zero
	// values: package ike defaults). Proposals are taken from the gateway
	// configuration and override IKE.IKEProposals / ESPProposals.
	IKE l2tpipsec.IKEOptions
	// MaxHalfOpen, MaxNegotiating, HalfOpenTTL, RatePerSource,
	// BurstPerSource bound half-open IKE SAs inside the IKE engine (zero:
	// its defaults).
	MaxHalfOpen    int
	MaxNegotiating int
	HalfOpenTTL    time.Duration
	RatePerSource  float64
	BurstPerSource int
	// EchoInterval and EchoFailures drive the PPP LCP echo keepalive
	// (zero: the configuration's lcp_echo). IKE.DPDInterval and
	// IKE.DPDTimeout likewise default to the configuration's dpd.
	EchoInterval time.Duration
	EchoFailures int
	// UnauthTimeout closes an L2TP tunnel without an authenticated
	// session (zero: uplink/l2tpipsec's default).
	UnauthTimeout time.Duration
	// IKEConn and NATTConn, when set, are used instead of binding the
	// configured listen addresses (tests).
	IKEConn, NATTConn net.PacketConn
	// RawL2TP enables the raw L2TP listener (no IPsec) on the configured
	// l2tp_port (as listen.raw_l2tp does); RawL2TPConn, when set, is used
	// instead of binding it.
	RawL2TP     bool
	RawL2TPConn net.PacketConn
	// Clock drives every timer (default clock.System).
	Clock clock.Clock
	// Logger gets lifecycle lines (default: the Env's logger).
	Logger *slog.Logger
}

// Engine implements server.Engine.
type Engine struct {
	cfg   Config
	stats Stats
	seen  ikeSeen
	// setups pairs first Main Mode messages with sessions reaching IPCP.
	setups setupClock
	raw2   l2tp.Stats // raw L2TP listener
	// lastBackoffLog rate-limits the backoff refusal line (Unix ns).
	lastBackoffLog atomic.Int64

	mu  sync.Mutex
	srv *l2tpipsec.Server
	raw *rawListener
	up  chan struct{}
}

// New returns an engine; Run starts it.
func New(cfg Config) *Engine {
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	return &Engine{cfg: cfg, up: make(chan struct{})}
}

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// RawL2TPStats returns the raw L2TP listener's counters.
func (e *Engine) RawL2TPStats() *l2tp.Stats { return &e.raw2 }

// Ready is closed once Run has bound its sockets.
func (e *Engine) Ready() <-chan struct{} { return e.up }

// Tunnel returns the running tunnel server (nil before Ready).
func (e *Engine) Tunnel() *l2tpipsec.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// RawL2TPAddr returns the raw L2TP listener's address (invalid when off).
func (e *Engine) RawL2TPAddr() netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.raw == nil {
		return netip.AddrPort{}
	}
	return e.raw.addr()
}

// Run binds the listen addresses, answers peers until ctx is cancelled,
// then tells every peer to go (IKE Delete, L2TP StopCCN) and returns once
// every session is unregistered. An Engine runs once.
func (e *Engine) Run(ctx context.Context, env *server.Env) error {
	log := e.cfg.Logger
	if log == nil {
		log = env.Log
	}
	log = log.With("component", "engine")
	gc := env.Config()
	var ic ike.Config
	if err := env.FillIKEConfig(&ic); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// Liveness from the configuration (dpd, lcp_echo) unless the engine's
	// own Config sets it.
	ikeOpts := e.cfg.IKE
	if ikeOpts.DPDInterval == 0 {
		ikeOpts.DPDInterval = gc.DPD.IntervalD
	}
	if ikeOpts.DPDTimeout == 0 {
		ikeOpts.DPDTimeout = gc.DPD.TimeoutD
	}
	// The key log (debug.keylog_dir) follows a reload: on, off or moved.
	kl := &keylog.Writer{}
	keylogDir := gc.Debug.KeylogDir
	if err := kl.SetDir(keylogDir); err != nil {
		return fmt.Errorf("%w: debug.keylog_dir: %w", ErrConfig, err)
	}
	if keylogDir != "" {
		log.Warn("key log on: IKE and ESP keys of new SAs are written for Wireshark (secrets)", "dir", keylogDir)
	}
	defer kl.Close()
	ikeOpts.ProposalKeys = ike.ProposalKeys{IKE: config.KeyIKEProposals, ESP: config.KeyESPProposals, Legacy: config.KeyAllowLegacy}
	echoInterval, echoFailures := e.echo(gc)
	sc := l2tpipsec.ServerConfig{
		PSK: ic.PSK, CAs: ic.CAs, CheckCert: ic.CheckCert, AllowIdentity: ic.AllowIdentity,
		ResponderPSKs: ic.ResponderPSKs, PSKForID: ic.PSKForID, BoundIdentity: ic.BoundIdentity,
		LocalAddrFor: ic.LocalAddrFor, LocalID: ic.LocalID,
		MethodsFor: func(id ike.Identity) []ppp.AuthMethod { return server.PPPMethods(env.Config(), server.Phase1Of(id)) },
		OnIKEAuthFailed: func(remote netip.AddrPort, peer ike.Identity, err error) {
			// Per source, and per identity when the ID it claimed names one.
			name := ""
			if id := env.Config().IdentityByIKEID(server.Phase1Of(peer).ID); id != nil && server.Phase1Of(peer).ID != "" {
				name = id.Name
			}
			env.Backoff().Failed(remote.Addr(), name)
			if errors.Is(err, ike.ErrKeyNotBound) {
				env.Metrics.Refused(metrics.CheckPSKNotBound)
			}
		},
		IKEOptions:  ikeOpts,
		MaxHalfOpen: e.cfg.MaxHalfOpen, HalfOpenTTL: e.cfg.HalfOpenTTL,
		RatePerSource: e.cfg.RatePerSource, BurstPerSource: e.cfg.BurstPerSource,
		LocalAddr: gc.Pool.GatewayAddr, MRU: gc.MTU,
		// The LCP MRU is the session's effective MTU: mtu capped by what one
		// outer packet carries for its ESP suite and outer family (20 bytes
		// less over IPv6), so no inner packet is fragmented outside.
		MRUFor: func(ss *l2tpipsec.ServerSession, mru int) int {
			return dataplane.EffectiveMTUOver(ss.Suite(), ss.Outer().Addr(), 0, mru)
		},
		// IPV6CP (identities with an ipv6_prefix): the gateway's link-local
		// address is fe80::1 on every session.
		IfaceID:      ppp.IfaceID{7: 1},
		EchoInterval: echoInterval, EchoFailures: echoFailures, UnauthTimeout: e.cfg.UnauthTimeout,
		Clock: e.cfg.Clock, Logger: log, KeyLog: kl,
	}
	if len(gc.Proposals.IKE) > 0 {
		sc.IKEProposals = strings.Join(gc.Proposals.IKE, ",")
	}
	if len(gc.Proposals.ESP) > 0 {
		sc.ESPProposals = strings.Join(gc.Proposals.ESP, ",")
	}
	if cert, err := loadCert(gc.PKI.Cert, gc.PKI.Key); err != nil {
		return err
	} else if cert != nil {
		sc.Cert = cert
	}
	if sc.PSK == nil && sc.Cert == nil {
		return fmt.Errorf("%w: neither a PSK nor a gateway certificate is configured", ErrConfig)
	}
	ikeConn, nattConn, err := e.bind(gc.Listen.IKEAddr(), gc.Listen.NATTAddr())
	if err != nil {
		return err
	}
	// Pacing (global and per source) is charged when a Main Mode's third
	// message proves the peer's address, before any Diffie-Hellman work
	// (ike.Config.Admit): spoofed first messages spend nobody's tokens.
	var refusals logLimiter
	// A source backing off after failed logins starts no Main Mode either
	// (an address some identity logged in from is never slowed here).
	sc.Admit = func(src netip.Addr) bool {
		if w := env.Backoff().CheckSource(src); w > 0 {
			e.stats.AdmissionRefused.Add(1)
			env.Metrics.Refused(metrics.CheckAuthBackoff)
			env.Metrics.SetupFailed(metrics.PhaseAdmission, "backoff")
			e.backoffWarn(log, src, w)
			return false
		}
		if d := env.Admission.Allow(src); d != admission.Admit {
			e.stats.AdmissionRefused.Add(1)
			env.Metrics.SetupFailed(metrics.PhaseAdmission, "paced")
			refusals.warn(log, e.cfg.Clock.Now(), "new Main Mode refused by pacing", "peer", src, "reason", d.String())
			return false
		}
		e.stats.AdmissionAdmitted.Add(1)
		return true
	}
	// Limits from gateway.yaml (limits:) unless the engine's Config sets them.
	or := func(a, b int) int {
		if a != 0 {
			return a
		}
		return b
	}
	lim := gc.Limits
	sc.MaxHalfOpen = or(e.cfg.MaxHalfOpen, lim.IKEHalfOpen)
	sc.MaxNegotiating = or(e.cfg.MaxNegotiating, lim.IKENegotiating)
	if sc.HalfOpenTTL == 0 {
		sc.HalfOpenTTL = lim.IKEHalfOpenTimeoutD
	}
	sc.MaxSAsPerSource, sc.MaxQuickModes, sc.MaxChildren = lim.IKESAsPerSource, lim.IKEQuickModesPerSA, lim.IKEChildrenPerSA
	// The wrapper hides the *net.UDPConn from the ESP transport, which
	// would size the NAT-T socket's buffers itself: do it here.
	if u, ok := nattConn.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(socketBuffer)
		_ = u.SetWriteBuffer(socketBuffer)
	}
	first := func(src netip.Addr) { e.setups.note(src, e.cfg.Clock.Now()) }
	malformed := func(netip.Addr) {
		e.stats.AdmissionMalformed.Add(1)
		env.Metrics.SetupFailed(metrics.PhaseAdmission, "malformed")
	}
	admitOn := func(pc net.PacketConn, natt bool) *admitConn {
		ac := newAdmitConn(pc, natt, first, malformed)
		ac.log, ac.now = log, e.cfg.Clock.Now
		return ac
	}
	sc.IKEConn = admitOn(ikeConn, false)
	sc.NATTConn = admitOn(nattConn, true)

	mux := newAuthMux(env, &e.stats)
	sc.Authenticator, sc.AddressFunc = mux, mux.Assign
	var wg sync.WaitGroup
	var shutdown sync.Once
	stopping := make(chan struct{})
	sc.OnSession = func(ss *l2tpipsec.ServerSession) {
		p := mux.claim(ss.Addr())
		if p == nil {
			log.Warn("session without a pending login", "addr", ss.Addr(), "peer", ss.Outer())
			_ = ss.Close()
			return
		}
		s := &Session{
			id: p.id, identity: p.auth.Identity(), routes: p.auth.Routes(), ipv6: p.auth.IPv6Prefix(),
			mtu:   dataplane.EffectiveMTUOver(ss.Suite(), ss.Outer().Addr(), 0, env.Config().MTU), // mtu: follows a reload
			suite: suiteName(ss.Suite()), outer: ss.Outer, started: ss.Started(),
			user: p.auth.PPPUser(), class: p.auth.Class(), link: ss, hold: p.hold,
			phase1: server.Phase1Of(ss.Identity()), hangup: ss.Hangup,
		}
		if t0, ok := e.setups.take(ss.Outer().Addr(), s.started); ok {
			env.Metrics.SetupDuration(s.started.Sub(t0))
		}
		e.serve(env, log, s, stopping)
	}
	srv, err := l2tpipsec.NewServer(sc)
	if err != nil {
		_ = ikeConn.Close()
		_ = nattConn.Close()
		return fmt.Errorf("engine: start: %w", err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
	// The router holds the ESP transport while it routes one split TUN
	// read, so that the burst leaves in full sendmmsg/GSO batches.
	if env.Router != nil {
		env.Router.SetBurster(srv)
		defer env.Router.SetBurster(nil)
	}
	// proposals, mtu and debug.keylog_dir follow a reload (new Main Modes,
	// Quick Modes and sessions at once; for the first two the reload then
	// closes the sessions, which reconnect under them).
	env.OnReload(func(c *config.Config) {
		ikes, esps := strings.Join(c.Proposals.IKE, ","), strings.Join(c.Proposals.ESP, ",")
		if err := srv.SetProposals(ikes, esps); err != nil {
			log.Error("reload: proposals not applied, the previous ones stay", "err", err)
		} else {
			log.Info("reload: proposals applied", "ike", ikes, "esp", esps)
		}
		srv.SetMRU(c.MTU) // mtu: new sessions negotiate it (EffectiveMTUOver reads it too)
		if d := c.Debug.KeylogDir; d != keylogDir {
			if err := kl.SetDir(d); err != nil {
				log.Error("reload: debug.keylog_dir not applied: key log off", "dir", d, "err", err)
				d = ""
			}
			keylogDir = d
			if d != "" {
				log.Warn("reload: key log on: IKE and ESP keys of new SAs are written for Wireshark (secrets)", "dir", d)
			} else {
				log.Info("reload: key log off")
			}
		}
	})
	if e.cfg.RawL2TP || e.cfg.RawL2TPConn != nil || gc.Listen.RawL2TP {
		raw, err := e.startRaw(env, log, netip.AddrPortFrom(gc.Listen.Addr, uint16(gc.Listen.L2TPPort)), mux, stopping, &wg)
		if err != nil {
			_ = srv.Close()
			return err
		}
		e.mu.Lock()
		e.raw = raw
		e.mu.Unlock()
	}
	close(e.up)
	env.Ready() // sockets are bound: tell systemd (Type=notify)
	log.Info("session engine running", "ike", srv.IKEAddr(), "natt", srv.NATTAddr(), "raw_l2tp", e.RawL2TPAddr())

	wg.Add(1)
	go func() { defer wg.Done(); e.metricsLoop(ctx, env, srv) }()
	<-ctx.Done()
	shutdown.Do(func() { close(stopping) })
	log.Info("session engine stopping: Delete and StopCCN to every peer", "sessions", len(srv.Sessions()))
	e.mu.Lock()
	raw := e.raw
	e.mu.Unlock()
	if raw != nil {
		raw.close()
	}
	err = srv.Close() // waits for OnSession goroutines, i.e. every Unregister
	wg.Wait()
	e.syncMetrics(env, srv)
	return err
}

// serve runs one registered session until it ends (called on the tunnel
// server's OnSession goroutine, which it may hold).
func (e *Engine) serve(env *server.Env, log *slog.Logger, s *Session, stopping <-chan struct{}) {
	slog := log.With("session_id", s.id, "identity", s.identity, "vpn_addr", s.Addr())
	if s.identity == "" {
		slog.Warn("authenticated link without identity")
		_ = s.link.Close()
		return
	}
	// The identity's router counters, looked up once here rather than by
	// the router per packet (dataplane.CountedSession); set before
	// Register makes the session reachable.
	if env.Router != nil {
		s.counters = env.Router.Identity(s.identity)
	}
	// Register first (routes, policy, accounting), then let packets in:
	// the ones the client sent since its IPCP opened were held and go
	// first, so nothing is lost and answers find the route.
	if err := env.Register(s); err != nil {
		e.stats.RegisterFailed.Add(1)
		slog.Warn("session refused by the session table", "err", err)
		s.link.SetPacketHandler(nil)
		if s.hold != nil {
			s.hold.close()
		}
		env.ReleaseAddress(s.Addr())
		env.ReleaseIPv6(s.Identity(), s.ipv6)
		_ = s.link.Close()
		return
	}
	fromSession := func(pkt []byte) { _ = env.Router.FromSession(s, pkt) }
	if s.hold != nil {
		s.hold.open(fromSession)
	}
	s.link.SetPacketHandler(fromSession)
	e.stats.SessionsUp.Add(1)
	<-s.link.Done()
	s.link.SetPacketHandler(nil)
	shutdown := false
	select {
	case <-stopping:
		shutdown = true
	default:
	}
	cause, dpd, echo := s.endCause(shutdown)
	if dpd {
		env.Metrics.DPDFailure(s.identity)
	}
	if echo {
		env.Metrics.LCPEchoFailure(s.identity)
	}
	env.Unregister(s, cause)
	e.stats.SessionsDown.Add(1)
	slog.Info("session ended", "reason", s.link.Err(), "cause", cause)
}

// backoffWarn logs a Main Mode refused by the failure backoff, at most
// once per second.
func (e *Engine) backoffWarn(log *slog.Logger, src netip.Addr, w time.Duration) {
	now := e.cfg.Clock.Now()
	if last := e.lastBackoffLog.Load(); last != 0 && now.UnixNano()-last < int64(time.Second) {
		return
	}
	e.lastBackoffLog.Store(now.UnixNano())
	log.Warn("Main Mode refused: too many failed logins from this source, backing off", "peer", src, "retry_after", w.Round(time.Second))
}

// echo returns the LCP echo interval and failures: the engine's Config
// where set, else the configuration's lcp_echo.
func (e *Engine) echo(gc *config.Config) (time.Duration, int) {
	iv, n := e.cfg.EchoInterval, e.cfg.EchoFailures
	if iv == 0 {
		iv = gc.LCPEcho.IntervalD
	}
	if n == 0 {
		n = gc.LCPEcho.Failures
	}
	return iv, n
}

// bind opens the IKE and NAT-T sockets (or takes the configured ones).
func (e *Engine) bind(ikeAddr, nattAddr netip.AddrPort) (net.PacketConn, net.PacketConn, error) {
	if e.cfg.IKEConn != nil && e.cfg.NATTConn != nil {
		return e.cfg.IKEConn, e.cfg.NATTConn, nil
	}
	ic, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ikeAddr))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: IKE %v: %w", ErrListen, ikeAddr, err)
	}
	nc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(nattAddr))
	if err != nil {
		_ = ic.Close()
		return nil, nil, fmt.Errorf("%w: NAT-T %v: %w", ErrListen, nattAddr, err)
	}
	return ic, nc, nil
}

// loadCert reads the gateway's certificate and key (none configured: nil).
func loadCert(certPath, keyPath string) (*ike.LocalCert, error) {
	if certPath == "" || keyPath == "" {
		return nil, nil
	}
	c, err := pemfile.ReadCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway certificate: %w", ErrConfig, err)
	}
	k, err := pemfile.ReadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway key: %w", ErrConfig, err)
	}
	return &ike.LocalCert{Chain: [][]byte{c.Raw}, Key: k}, nil
}

// suiteName names an ESP suite for status ("none" without IPsec).
func suiteName(s interface{ String() string }) string {
	if n := s.String(); n != "" {
		return n
	}
	return "none"
}
