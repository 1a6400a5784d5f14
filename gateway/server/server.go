// Package server is the gateway daemon's core: it owns the configuration,
// session table, address pool, data plane router and host (TUN or
// userspace), Main Mode admission, RADIUS client, metrics and status
// endpoints, and hands an Env to the session Engine (the IKE/L2TP/PPP
// responder) that plugs into it. Reload applies a new configuration and
// closes only the sessions it affects.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetgate/fleetgate/gateway/admission"
	"github.com/fleetgate/fleetgate/gateway/bgp"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/pool"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/gateway/status"
	"github.com/fleetgate/fleetgate/internal/ctlsock"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/internal/sdnotify"
	"github.com/fleetgate/fleetgate/internal/statuspage"
	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/dhcpinform"
)

// Options configure New.
type Options struct {
	// Engine is the session engine; nil runs everything else and reports
	// engine "not linked" in status.
	Engine Engine
	// Host overrides the data plane host (tests); nil opens what the
	// configuration says (TUN or userspace).
	Host dataplane.Host
	// Logger; nil discards.
	Logger *slog.Logger
	// Clock (default clock.System).
	Clock clock.Clock
}

// Server is the gateway daemon.
type Server struct {
	opts      Options
	log       *slog.Logger
	readyOnce sync.Once // READY=1 is sent once per process
	cfg       atomic.Pointer[config.Config]
	verifier  atomic.Pointer[pki.Verifier]
	pool      atomic.Pointer[pool.Pool]
	pool6     atomic.Pointer[pool.Pool6] // pool.ipv6_prefix (nil: none); pool6.go
	table     *route.Table
	router    *dataplane.Router
	adm       *admission.Limiter
	gm        *metrics.Gateway
	reg       *prometheus.Registry
	rad       *radius.Client
	fleet     radiusFleet  // accounting spool, DAE listener, CoA filters; see radiusfleet.go
	bgp       *bgp.Speaker // nil without a bgp section; see bgp.go
	crl       crlSource    // pki.crl_url fetcher; see crlsource.go
	ocsp      ocspState    // pki.ocsp_url checker; see ocsp.go
	env       *Env
	host      atomic.Pointer[hostRef]
	started   time.Time
	engine    atomic.Value // string: state of the engine
	httpAddr  atomic.Value // string: bound metrics/status address
	seenIDs   seenSet
	bo        *Backoff

	mu     sync.Mutex
	states map[uint64]*sessionState
	// reloadHooks run on every reload (Env.OnReload); under mu.
	reloadHooks []func(*config.Config)
}

// New builds a server from a validated configuration.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log, table: route.NewTable(), gm: metrics.NewGateway(opts.Clock.Now), states: map[uint64]*sessionState{}}
	s.cfg.Store(cfg)
	s.ocsp.init()
	p, err := newPool(cfg)
	if err != nil {
		return nil, err
	}
	s.pool.Store(p)
	p6, err := newPool6(cfg)
	if err != nil {
		return nil, err
	}
	s.pool6.Store(p6)
	v, err := s.newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	s.verifier.Store(v)
	if s.bgp, err = s.newSpeaker(cfg); err != nil {
		return nil, err
	}
	s.adm = admission.New(admission.Config{GlobalRate: cfg.Pacing.GlobalRate, GlobalBurst: cfg.Pacing.GlobalBurst,
		PerSourceRate: cfg.Pacing.PerSourceRate, PerSourceBurst: cfg.Pacing.PerSourceBurst, Clock: opts.Clock})
	if r := cfg.RADIUS; r != nil {
		s.rad = radius.New(radius.Config{Auth: r.Auth, Acct: r.Acct, AuthServers: r.AuthServers, AcctServers: r.AcctServers, DeadTime: r.DeadTimeD,
			Now: opts.Clock.Now, Secret: []byte(r.Secret), NASIdentifier: r.NASIdentifier, Timeout: r.TimeoutD, Logger: log,
			MaxInFlight: cfg.Limits.RADIUSInFlight})
		if err := s.openSpool(r); err != nil {
			return nil, err
		}
	}
	s.router = dataplane.New(dataplane.Config{Sessions: s.table, Policies: policy.Compile(cfg), LocalAddr: cfg.Pool.GatewayAddr,
		SessionToSession: cfg.DataPlane.SessionToSession, Local: s.local, Clock: opts.Clock, Logger: log})
	ab := cfg.AuthBackoff
	s.bo = NewBackoff(ab.Free, ab.DelayD, ab.MaxDelayD, ab.ForgetD, opts.Clock.Now)
	s.env = &Env{Sessions: s.table, Router: s.router, Admission: s.adm, Metrics: s.gm, RADIUS: s.rad, Log: log, srv: s}
	s.engine.Store("not linked")
	s.started = opts.Clock.Now()
	s.setExpiries(cfg)
	s.reg = s.newRegistry()
	return s, nil
}

func newPool(cfg *config.Config) (*pool.Pool, error) {
	p, err := pool.New(cfg.Pool.PrefixP, cfg.Pool.GatewayAddr)
	if err != nil {
		return nil, err
	}
	if cfg.Pool.SliceLo.IsValid() {
		if err := p.SetSlice(cfg.Pool.SliceLo, cfg.Pool.SliceHi); err != nil {
			return nil, err
		}
	}
	for _, id := range cfg.Identities {
		if id.Addr.IsValid() {
			p.Reserve(id.Addr)
		}
	}
	return p, nil
}

// newVerifier loads the CA and CRL named by cfg; nil (and no error) when no
// CA is configured or its file is absent (certificate logins then fail).
func (s *Server) newVerifier(cfg *config.Config) (*pki.Verifier, error) {
	if cfg.PKI.CA == "" {
		return nil, nil
	}
	if _, err := os.Stat(cfg.PKI.CA); err != nil {
		s.log.Warn("no CA certificate: certificate identities cannot log in", "ca", cfg.PKI.CA)
		return nil, nil
	}
	crl := cfg.PKI.CRL
	if crl != "" {
		if _, err := os.Stat(crl); err != nil {
			crl = ""
		}
	}
	v, err := pki.LoadVerifier(cfg.PKI.CA, crl)
	if err != nil {
		return nil, err
	}
	return s.crlVerifier(cfg, v) // the fleet CRL, see crlsource.go
}

// Env returns the engine environment (tests and tools).
func (s *Server) Env() *Env { return s.env }

// Router returns the data plane router.
func (s *Server) Router() *dataplane.Router { return s.router }

// Metrics returns the server's metrics registry (served on /metrics).
func (s *Server) Metrics() *prometheus.Registry { return s.reg }

// HTTPAddr is the bound metrics/status address once Run listens ("" before).
func (s *Server) HTTPAddr() string {
	a, _ := s.httpAddr.Load().(string)
	return a
}

type hostRef struct{ h dataplane.Host }

// Host returns the data plane host once Run has opened it (nil before).
func (s *Server) Host() dataplane.Host {
	if r := s.host.Load(); r != nil {
		return r.h
	}
	return nil
}

func (s *Server) now() time.Time { return s.opts.Clock.Now() }

func (s *Server) seen(identity string) bool { return s.seenIDs.markSeen(identity) }

// local answers packets from sessions addressed to the gateway itself:
// DHCPINFORM gets the identity's push routes (options 121/249).
func (s *Server) local(sess Session, pkt []byte) bool {
	cfg := s.cfg.Load()
	gw := cfg.Pool.GatewayAddr
	var routes []dhcpinform.Route
	for _, p := range s.env.PushRoutes(sess.Identity()) {
		routes = append(routes, dhcpinform.Route{Prefix: p, Gateway: gw})
	}
	reply, ok, err := dhcpinform.Respond(pkt, dhcpinform.Reply{ServerID: gw, Routes: routes, DNS: cfg.DNSAddrs})
	if err != nil || !ok {
		return false
	}
	_ = sess.WritePacket(reply)
	return true
}

// Run opens the data plane host, serves metrics and status, runs the
// engine, and blocks until ctx is done; then it stops the engine (which
// sends Delete/StopCCN to every peer), ends accounting and closes the host.
func (s *Server) Run(ctx context.Context) error {
	cfg := s.cfg.Load()
	host, err := s.openHost(cfg)
	if err != nil {
		return err
	}
	s.host.Store(&hostRef{host})
	s.router.SetHost(host)
	var wg sync.WaitGroup
	hostCtx, stopHost := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.router.RunHost(hostCtx); err != nil {
			s.log.Error("data plane host reader stopped", "err", err)
		}
	}()
	var servers []*http.Server
	mux := http.NewServeMux()
	// ContinueOnError: a collector error (say two identities whose names
	// sanitise to the same label) must not hide every other series.
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slogPrinter{s.log}}))
	mux.Handle("/status", status.Handler(s.Report))
	// The unix socket is local by nature: its page reads without a token
	// whatever metrics.listen binds.
	unixMux := http.NewServeMux()
	unixMux.Handle("/", mux)
	pageListen := cfg.Metrics.Listen
	if pageListen == "off" {
		pageListen = ""
	}
	page, err := s.newStatusPage(cfg, pageListen, nil)
	if err != nil {
		stopHost()
		host.Close()
		wg.Wait()
		return err
	}
	if page != nil {
		if pageListen != "" {
			page.register(mux)
		}
		local, err := s.newStatusPage(cfg, "localhost", page.smp)
		if err != nil {
			stopHost()
			host.Close()
			wg.Wait()
			return err
		}
		local.register(unixMux)
	}
	if l := cfg.Metrics.Listen; l != "" && l != "off" {
		ln, err := net.Listen("tcp", l)
		if err != nil {
			stopHost()
			host.Close()
			wg.Wait()
			return fmt.Errorf("server: metrics listener: %w", err)
		}
		if sp := cfg.StatusPage; sp.TLSCert != "" {
			tc, err := statuspage.ServerTLS(sp.TLSCert, sp.TLSKey, sp.ClientCA)
			if err != nil {
				_ = ln.Close()
				stopHost()
				host.Close()
				wg.Wait()
				return fmt.Errorf("server: %w", err)
			}
			ln = tls.NewListener(ln, tc)
		}
		servers = append(servers, s.serve(ln, mux, &wg))
		s.httpAddr.Store(ln.Addr().String())
		s.log.Info("metrics and status listening", "addr", ln.Addr().String())
	}
	if sock := cfg.Status.Socket; sock != "" {
		ln, err := ctlsock.Listen(sock)
		if err != nil {
			s.log.Warn("status socket unavailable", "socket", sock, "err", err)
		} else {
			// The control socket serves what the HTTP listener does plus
			// the actions (`gateway sessions terminate`); file mode 0660
			// (root and the fleetgate group) is its access control.
			ctl := http.NewServeMux()
			ctl.Handle("/", unixMux)
			ctl.Handle(status.TerminatePath, status.TerminateHandler(func(id string) int {
				n := s.CloseSessions(func(sess Session) bool { return sess.Identity() == id }, "terminated by operator")
				s.log.Info("sessions terminated by operator", "identity", id, "sessions_closed", n)
				return n
			}))
			// The views the status page serves, always on the socket
			// (`gateway sessions --json` prints this very struct).
			ctl.Handle("GET "+fleetview.ViewPath+"sessions", fleetview.JSONHandler(func() any { return s.SessionsView() }))
			servers = append(servers, s.serve(ln, ctl, &wg))
		}
	}
	s.startBGP(ctx)
	stopFleet, err := s.startRADIUSFleet(cfg)
	if err != nil {
		s.stopBGP()
		for _, srv := range servers {
			_ = srv.Close()
		}
		stopHost()
		host.Close()
		wg.Wait()
		return err
	}
	if cfg.PKI.CRLURL != "" {
		wg.Add(1)
		go func() { defer wg.Done(); s.runCRLSource(ctx, cfg) }()
	}
	if cfg.PKI.OCSPURL != "" {
		wg.Add(1)
		go func() { defer wg.Done(); s.runOCSP(ctx, cfg) }()
	}
	engCtx, stopEngine := context.WithCancel(ctx)
	engDone := make(chan error, 1)
	if s.opts.Engine != nil {
		s.engine.Store("running")
		go func() { engDone <- s.opts.Engine.Run(engCtx, s.env) }()
	} else {
		s.log.Warn("no session engine linked: data plane, metrics and status only")
		engDone = nil
		s.ready()
	}
	interimStop := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); s.interimLoop(interimStop) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.sampleLoop(page, cfg.StatusPage.SampleIntervalD, interimStop) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-engDone:
		runErr = err
		engDone = nil
		s.engine.Store("stopped")
		if err != nil {
			s.log.Error("session engine stopped", "err", err)
		}
	}
	notify(s.log, sdnotify.Stopping)
	stopEngine()
	if engDone != nil {
		s.engine.Store("stopping")
		if err := <-engDone; err != nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}
	// Sessions the engine did not unregister end here.
	for _, sess := range s.table.Sessions() {
		s.env.Unregister(sess, radius.CauseNASReboot)
	}
	s.stopBGP()
	stopFleet()
	close(interimStop)
	for _, srv := range servers {
		_ = srv.Close()
	}
	stopHost()
	_ = host.Close()
	wg.Wait()
	if sock := cfg.Status.Socket; sock != "" {
		_ = os.Remove(sock)
	}
	return runErr
}

func (s *Server) serve(ln net.Listener, h http.Handler, wg *sync.WaitGroup) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ln)
	}()
	return srv
}

func (s *Server) openHost(cfg *config.Config) (dataplane.Host, error) {
	if s.opts.Host != nil {
		return s.opts.Host, nil
	}
	switch cfg.DataPlane.Mode {
	case config.ModeUserspace:
		return dataplane.NewUserspace(dataplane.UserspaceConfig{Addrs: cfg.DataPlane.AddressPrefixes, Logger: s.log})
	default:
		if err := dataplane.CheckIPForward(""); err != nil {
			s.log.Warn("ip forwarding", "err", err.Error())
			fmt.Fprintln(os.Stderr, err)
		}
		routes := []netip.Prefix{cfg.Pool.PrefixP}
		for _, id := range cfg.Identities {
			routes = append(routes, id.RoutePrefixes...)
		}
		// IPv6 site prefixes (static, the /64 pool): into the TUN too.
		if r6 := hostRoutes6(cfg); len(r6) > 0 {
			routes = append(routes, r6...)
			if err := dataplane.CheckIPForward("/proc/sys/net/ipv6/conf/all/forwarding"); err != nil {
				s.log.Warn("ipv6 forwarding (identities with ipv6_prefix)", "err", err.Error(), "fix", "sysctl -w net.ipv6.conf.all.forwarding=1")
			}
		}
		return dataplane.OpenTUN(dataplane.TUNConfig{Name: cfg.DataPlane.TUN, Driver: cfg.DataPlane.TUNDriver, LocalAddr: cfg.Pool.GatewayAddr, Routes: routes})
	}
}

// Report builds the status report.
func (s *Server) Report() status.Report {
	r := status.Report{Now: s.now(), Started: s.started, Engine: s.engine.Load().(string), Drops: map[string]uint64{}}
	for _, sess := range s.table.Sessions() {
		e := status.Session{ID: sess.ID(), Identity: sess.Identity(), VPNAddr: sess.Addr().String(), MTU: sess.MTU()}
		for _, p := range sess.Routes() {
			e.Routes = append(e.Routes, p.String())
		}
		if s6, ok := sess.(route.IPv6Session); ok && s6.IPv6Prefix().IsValid() {
			e.IPv6Prefix = s6.IPv6Prefix().String()
		}
		if d, ok := sess.(Describer); ok {
			e.Outer, e.Suite, e.Since = d.OuterAddr().String(), d.Suite(), d.Established()
		}
		s.mu.Lock()
		st := s.states[sess.ID()]
		s.mu.Unlock()
		c := s.router.Identity(sess.Identity())
		if st != nil {
			if e.Since.IsZero() {
				e.Since = st.start
			}
			e.RxBytes, e.TxBytes = c.RxBytes.Load()-st.rx0, c.TxBytes.Load()-st.tx0
			e.RxPackets, e.TxPackets = c.RxPackets.Load()-st.rxp0, c.TxPackets.Load()-st.txp0
		}
		r.Sessions = append(r.Sessions, e)
	}
	for _, reason := range dataplane.Reasons() {
		if n := s.router.Stats.Drops(reason); n > 0 {
			r.Drops[reason.String()] = n
		}
	}
	p := s.pool.Load()
	r.Pool = &status.Pool{Prefix: s.cfg.Load().Pool.PrefixP.String(), InUse: p.InUse(), Free: p.Free()}
	if p6 := s.pool6.Load(); p6 != nil {
		r.Pool.IPv6Prefix, r.Pool.IPv6InUse, r.Pool.IPv6Max, r.Pool.IPv6Exhausted = p6.Prefix().String(), p6.InUse(), p6.Max(), p6.Exhausted.Load()
	}
	sort.Slice(r.Sessions, func(i, j int) bool { return r.Sessions[i].Identity < r.Sessions[j].Identity })
	r.BGP = s.bgpReport()
	r.RADIUS = s.radiusReport()
	r.CRL = s.crlReport()
	return r
}

// ready sends READY=1 to the service manager once per Run.
func (s *Server) ready() {
	s.readyOnce.Do(func() {
		notify(s.log, sdnotify.Ready)
		s.log.Info("gateway ready")
	})
}

// notify sends one sd_notify state; outside systemd it does nothing.
func notify(log *slog.Logger, fn func() (bool, error)) {
	if _, err := fn(); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}

// NotifyReloading and NotifyReady bracket a configuration reload for the
// service manager (systemd Type=notify, ExecReload=kill -HUP).
func (s *Server) NotifyReloading() { notify(s.log, sdnotify.Reloading) }

// NotifyReady says the reload is over (applied or refused).
func (s *Server) NotifyReady() { notify(s.log, sdnotify.Ready) }

// slogPrinter logs promhttp's scrape errors.
type slogPrinter struct{ log *slog.Logger }

// Println implements promhttp.Logger.
func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics scrape", "err", fmt.Sprint(v...)) }
