// Package daemon composes the edge bridge (Site: New, Start, Status, Close;
// Run for the command): endpoint registry, site CA,
// userspace IP stack fed by the uplink, DTLS/CoAP downlink, CoAP proxy,
// and the HTTP /metrics and /status endpoints.
package daemon

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/mqttrelay"
	"github.com/fleetgate/fleetgate/bridge/proxy"
	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/ctlsock"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/internal/sdnotify"
	"github.com/fleetgate/fleetgate/internal/statuspage"
	"github.com/fleetgate/fleetgate/ipstack"
)

// NewUplink returns the uplink for cfg: "none" drops everything,
// "l2tp-ipsec" is the uplink package's client (not yet started).
func NewUplink(cfg *config.Config, log *slog.Logger) (Uplink, error) {
	switch cfg.Uplink.Mode {
	case "none":
		return noneUplink{}, nil
	case "l2tp-ipsec":
		uc, crl, err := clientConfig(cfg, log)
		if err != nil {
			return nil, err
		}
		return newClientUplink(uc, crl)
	}
	return nil, fmt.Errorf("daemon: unknown uplink mode %q", cfg.Uplink.Mode)
}

// OpenRegistry opens the endpoint registry and site CA of cfg.
func OpenRegistry(cfg *config.Config) (*registry.Registry, *registry.CA, error) {
	var reserved []netip.Addr
	if cfg.BridgeAddr.IsValid() {
		reserved = append(reserved, cfg.BridgeAddr)
	}
	reg, err := registry.Open(filepath.Join(cfg.StateDir, "endpoints.json"), cfg.Prefix, reserved...)
	if err != nil {
		return nil, nil, err
	}
	if err := reg.SetIPv6Prefix(cfg.IPv6Prefix); err != nil {
		return nil, nil, err
	}
	ca, err := registry.LoadOrCreateCA(filepath.Join(cfg.StateDir, "ca"), cfg.Site)
	if err != nil {
		return nil, nil, err
	}
	return reg, ca, nil
}

// ReadRegistry opens the endpoint registry for reading: unlike
// OpenRegistry it creates nothing (no state directory, no site CA), so
// read-only verbs leave the disk as they found it.
func ReadRegistry(cfg *config.Config) (*registry.Registry, error) {
	var reserved []netip.Addr
	if cfg.BridgeAddr.IsValid() {
		reserved = append(reserved, cfg.BridgeAddr)
	}
	reg, err := registry.Open(filepath.Join(cfg.StateDir, "endpoints.json"), cfg.Prefix, reserved...)
	if err != nil {
		return nil, err
	}
	if err := reg.SetIPv6Prefix(cfg.IPv6Prefix); err != nil {
		return nil, err
	}
	return reg, nil
}

// EndpointStatus is one row of /status.
type EndpointStatus struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Addr6 is the endpoint's IPv6 address (ipv6_prefix set).
	Addr6    string `json:"addr6,omitempty"`
	Protocol string `json:"protocol"`
	Online   bool   `json:"online"`
	// Parked: the DTLS session is idle and parked (state kept, no conn).
	Parked   bool      `json:"parked,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Queued   int       `json:"queued"`
	// Relay is the MQTT relay session's state and BytesQueued its spool
	// bytes (MQTT endpoints).
	Relay       string `json:"relay,omitempty"`
	BytesQueued int64  `json:"bytes_queued,omitempty"`
	// Spooled and SpoolBytes are the CoAP spool depth (CoAP endpoints):
	// telemetry answered 2.04 and not yet confirmed by central.
	Spooled    int    `json:"spooled"`
	SpoolBytes int64  `json:"spool_bytes"`
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
}

// Status is the /status document.
type Status struct {
	Uplink string `json:"uplink"`
	// SpoolAge is the age of the oldest spooled MQTT message.
	SpoolAge  time.Duration    `json:"spool_oldest_age,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// Run runs the bridge until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	return RunWith(ctx, cfg, log, Options{})
}

// Options are Run's optional hooks.
type Options struct {
	// Reload (SIGHUP): on every receive the endpoint registry's file is
	// re-read, and endpoints added by `bridge endpoint add` since the
	// start are served without a restart.
	Reload <-chan os.Signal
	// Ready, if set, is called once the listeners are bound and the
	// uplink started, with their addresses.
	Ready func(Addrs)
	// Reloaded, if set, is called after each reload with the number of
	// endpoints added.
	Reloaded func(added int, err error)
}

// Addrs are the bound listener addresses (MQTT ones nil when off).
type Addrs struct {
	CoAP, HTTP, MQTTTLS, MQTTPlain net.Addr
}

// RunWith is Run with Options: New, Start, then reloads until ctx ends,
// then Close.
func RunWith(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	s.Start()
	if opts.Ready != nil {
		opts.Ready(s.Addrs())
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("bridge stopping")
			return nil
		case <-opts.Reload:
			_, _ = sdnotify.Reloading()
			n, err := s.Reload()
			if opts.Reloaded != nil {
				opts.Reloaded(n, err)
			}
			_, _ = sdnotify.Ready()
		}
	}
}

// Site is the composed edge bridge: endpoint registry and site CA, the
// uplink client feeding a userspace IP stack that holds the PPP address and
// every endpoint address, the DTLS/CoAP server with the CoAP proxy, the MQTT
// broker with its relay and spool, and the HTTP /metrics and /status
// server. New binds every listener; Start starts the uplink; Close stops
// everything (the uplink's Close tears down PPP, L2TP and IKE).
type Site struct {
	cfg *config.Config
	log *slog.Logger
	reg *registry.Registry
	ca  *registry.CA
	up  Uplink
	st  *ipstack.Stack
	px  *proxy.Proxy
	csp *spool.Spool // CoAP store-and-forward
	srv *coap.Server
	ms  *mqttSide
	ln  net.Listener
	// relay is s.ms.relay once started, for the uplink state handler.
	relay atomic.Pointer[mqttrelay.Relay]

	pxMu    sync.Mutex // guards px for the uplink state handler
	closers []func()   // run in reverse by Close
	revoked atomic.Uint64
	// crlf fetches uplink.crl_url through the tunnel (nil without it).
	crlf *crlFetcher
	// page is the status page's state (nil when status_page is off).
	page     *pageState
	reloadMu sync.Mutex
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	started  atomic.Bool
}

// New composes the site for cfg and binds its listeners.
func New(cfg *config.Config, log *slog.Logger) (_ *Site, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Site{cfg: cfg, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	reg, ca, err := OpenRegistry(cfg)
	if err != nil {
		return nil, err
	}
	s.reg, s.ca = reg, ca
	if err := s.loadSiteCRL(); err != nil {
		return nil, err
	}
	up, err := NewUplink(cfg, log)
	if err != nil {
		return nil, err
	}
	s.up = up
	s.closers = append(s.closers, func() { _ = up.Close() }) // PPP, L2TP, IKE torn down gracefully, last
	st, err := ipstack.New(ipstack.Config{MTU: cfg.Uplink.MTU, Output: up.WritePacket, Logger: log, Routed: true})
	if err != nil {
		return nil, err
	}
	s.st = st
	s.closers = append(s.closers, st.Close)
	up.SetInbound(func(pkt []byte) { _ = st.InjectInbound(pkt) })
	var uplinkUp atomic.Bool
	var downSince atomic.Int64 // unix nanos the uplink went down (0: never up)
	up.SetStateHandler(func(u bool, reason string) {
		log.Info("uplink state", "up", u, "state", reason)
		was := uplinkUp.Swap(u)
		switch {
		case was && !u:
			downSince.Store(time.Now().UnixNano())
		case !was && u && downSince.Load() != 0:
			// A new tunnel after an outage: central connections that
			// waited it out in TCP retransmission backoff start afresh.
			if r := s.relay.Load(); r != nil {
				r.UplinkUp(time.Unix(0, downSince.Load()))
			}
		}
		if px := s.proxy(); px != nil {
			px.UplinkChanged(u)
		}
		if a, err := netip.ParseAddr(up.LocalAddr()); u && err == nil {
			// The PPP (IPCP) address, so the bridge itself is reachable.
			if err := st.AddAddress(netip.PrefixFrom(a, 32)); err != nil {
				log.Warn("uplink address", "addr", a, "err", err)
			}
		}
	})
	if cfg.BridgeAddr.IsValid() {
		if err := st.AddAddress(netip.PrefixFrom(cfg.BridgeAddr, 32)); err != nil {
			return nil, err
		}
	}
	cs := cfg.CoAPSpool
	csp, err := spool.Open(spool.Config{Dir: filepath.Join(cfg.StateDir, "coap-spool"), MaxBytes: cs.MaxBytes,
		EndpointMaxBytes: cs.EndpointMaxBytes, Logger: log.With("spool", "coap")})
	if err != nil {
		return nil, err
	}
	s.csp = csp
	s.closers = append(s.closers, func() { _ = csp.Close() }) // after the proxy's forwarders stopped
	for _, name := range csp.Endpoints() {
		if ep, ok := reg.ByName(name); !ok || ep.Protocol != registry.CoAP {
			n, _ := csp.DropEndpoint(name)
			log.Warn("coap spool: dropped messages of an endpoint no longer configured", "endpoint", name, "messages", n)
		}
	}
	modes := map[string]proxy.Mode{}
	for path, m := range cs.Paths {
		modes[path] = proxy.Mode(m)
	}
	px, err := proxy.New(proxy.Config{Stack: st, Registry: reg, Central: cfg.Central, Hosts: cfg.Hosts,
		QueueLen: cfg.Downlink.QueueLen, QueueTTL: cfg.Downlink.QueueTTL, Logger: log,
		NStart: cfg.Downlink.NStart, MaxInFlight: cfg.Downlink.MaxInFlight,
		Spool: csp, Modes: modes, RetryAfter: cs.RetryAfter, UplinkUp: uplinkUp.Load})
	if err != nil {
		return nil, err
	}
	if err := px.Start(); err != nil {
		return nil, err
	}
	s.pxMu.Lock()
	s.px = px
	s.pxMu.Unlock()
	s.closers = append(s.closers, px.Close)
	// Devices verify the site certificate against the site CA: it names the
	// address they dial (advertised_host) and carries server use.
	certHosts := []string{"bridge." + cfg.Site}
	if h := cfg.Downlink.AdvertHost; h != "" {
		certHosts = append(certHosts, h)
	}
	srvCert, err := ca.IssueTLS("bridge."+cfg.Site, 1, certHosts...)
	if err != nil {
		return nil, err
	}
	if cfg.MQTT.Enabled {
		if s.ms, err = startMQTT(cfg, reg, ca, srvCert, st, log); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.ms.close)
		s.relay.Store(s.ms.relay)
	}
	// DTLS sessions survive a restart (downlink/coap store.go) unless
	// downlink.keep_sessions is false.
	var sessFile, sessKey string
	if k := cfg.Downlink.KeepSessions; cfg.StateDir != "" && (k == nil || *k) {
		sessFile, sessKey = filepath.Join(cfg.StateDir, "coap-sessions.state"), filepath.Join(cfg.StateDir, "coap-sessions.key")
	}
	srv, err := coap.New(coap.Config{ListenAddr: cfg.Downlink.CoAPListen, Registry: reg, ClientCAs: ca.Pool,
		Certificate: &srvCert, Handler: px.HandleDevice, OnSession: px.OnSession, OnReset: px.OnReset,
		Busy: func(name string) bool { down, up := px.Observations(name); return down+up > 0 }, Rate: cfg.Downlink.Rate,
		Burst: cfg.Downlink.Burst, IdleTimeout: cfg.Downlink.IdleTimeout, Logger: log,
		MaxPendingHandshakes: cfg.Downlink.MaxPendingHandshakes, MaxPendingPerSource: cfg.Downlink.MaxPendingPerSource,
		PendingTimeout: cfg.Downlink.PendingTimeout, MaxBlockTransfers: cfg.Downlink.MaxBlockTransfers, HandshakeBudget: cfg.Downlink.HandshakeBudget,
		ParkAfter: cfg.Downlink.ParkAfter, StateFile: sessFile, StateKeyFile: sessKey})
	if err != nil {
		return nil, err
	}
	s.srv = srv
	px.SetSessions(srv.Session)
	go func() { _ = srv.Serve() }()
	s.closers = append(s.closers, func() { srv.Close(); srv.Wait() })

	if cu, ok := s.up.(*clientUplink); ok && cfg.Uplink.CRLURL != "" && cu.crl != nil {
		s.crlf = s.newCRLFetcher(cu.crl)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Status())
	})
	if err := s.newPage(mux); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("daemon: http listen: %w", err)
	}
	if sp := cfg.StatusPage; sp.TLSCert != "" {
		tc, err := statuspage.ServerTLS(sp.TLSCert, sp.TLSKey, sp.ClientCA)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("daemon: %w", err)
		}
		ln = tls.NewListener(ln, tc)
	}
	s.ln = ln
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	s.closers = append(s.closers, func() { _ = hs.Close() })
	s.serveControl(cfg.ControlSocketPath(), mux, log)
	return s, nil
}

// serveControl serves the same handlers as the HTTP listener on the unix
// control socket (mode 0660: root and the fleetgate group), which the
// `bridge status|endpoints|uplink` verbs ask. A socket that cannot be
// bound is logged and the bridge runs without it.
func (s *Site) serveControl(sock string, h http.Handler, log *slog.Logger) {
	ln, err := ctlsock.Listen(sock)
	if err != nil {
		log.Warn("control socket unavailable", "socket", sock, "err", err)
		return
	}
	// The status page's views, always on the socket: `bridge endpoints
	// --json` and `bridge uplink --json` print these very structs.
	ctl := http.NewServeMux()
	ctl.Handle("/", h)
	ctl.Handle("GET "+fleetview.ViewPath+"endpoints", fleetview.JSONHandler(func() any { return s.EndpointsView() }))
	ctl.Handle("GET "+fleetview.ViewPath+"uplink", fleetview.JSONHandler(func() any { return s.UplinkView() }))
	hs := &http.Server{Handler: ctl, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	s.closers = append(s.closers, func() { _ = hs.Close() })
}

// Start starts the uplink client and the proxy's queue-expiry ticker, and
// tells systemd READY (the downlink listeners are bound by New).
func (s *Site) Start() {
	if s.started.Swap(true) {
		return
	}
	s.up.Start()
	if s.crlf != nil {
		go s.crlf.run(s.stop)
	}
	if s.page != nil {
		go s.runSampler()
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case now := <-tick.C:
				s.px.Tick(now)
			}
		}
	}()
	_, _ = sdnotify.Ready()
	a := s.Addrs()
	s.log.Info("bridge started", "coap", a.CoAP.String(), "http", a.HTTP.String(), "endpoints", s.reg.Len(), "uplink", s.up.State())
}

// Close stops everything: listeners, MQTT and proxy first, the uplink (PPP,
// L2TP and IKE torn down gracefully) last.
// It may be called more than once.
func (s *Site) Close() error {
	s.once.Do(func() {
		_, _ = sdnotify.Stopping()
		close(s.stop)
		if s.started.Load() {
			<-s.done
			if s.page != nil {
				close(s.page.stop)
				<-s.page.done
			}
		}
		s.closeAll()
	})
	return nil
}

func (s *Site) closeAll() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Addrs returns the bound listener addresses.
func (s *Site) Addrs() Addrs {
	a := Addrs{CoAP: s.srv.Addr(), HTTP: s.ln.Addr()}
	if s.ms != nil {
		a.MQTTTLS, a.MQTTPlain = s.ms.broker.TLSAddr(), s.ms.broker.PlainAddr()
	}
	return a
}

func (s *Site) proxy() *proxy.Proxy {
	s.pxMu.Lock()
	defer s.pxMu.Unlock()
	return s.px
}

// Stack returns the site's userspace IP stack.
func (s *Site) Stack() *ipstack.Stack { return s.st }

// Registry returns the site's endpoint registry.
func (s *Site) Registry() *registry.Registry { return s.reg }

// Reload (SIGHUP) re-reads the registry file and applies it: endpoints
// added, removed, or with changed credentials or allow-lists (see
// reloadEndpoints). It returns how many endpoints were added.
func (s *Site) Reload() (int, error) {
	s.reloadMu.Lock() // SIGHUP and the status page's remove action
	defer s.reloadMu.Unlock()
	if err := s.loadSiteCRL(); err != nil {
		s.log.Warn("site CRL not reloaded; the previous one stays", "err", err)
	}
	res, err := reloadEndpoints(s.cfg, s.px, s.revoker())
	if err != nil {
		s.log.Warn("reload incomplete", "err", err)
	}
	if cu, ok := s.up.(*clientUplink); ok {
		if err := cu.reloadCRL(); err != nil {
			s.log.Warn("uplink.crl not reloaded; the previous CRL stays", "err", err)
		}
	}
	s.log.Info("endpoints reloaded", "added", res.Added, "removed", res.Removed, "rekeyed", res.Rekeyed,
		"reallowed", res.Reallowed, "endpoints", s.reg.Len())
	n := len(res.Added)
	if s.ms != nil {
		for _, ep := range s.reg.List() {
			if ep.Protocol == registry.MQTT {
				_ = s.ms.relay.AddEndpoint(ep.Name)
			}
		}
	}
	return n, err
}

// Status returns the uplink state and every endpoint's row.
func (s *Site) Status() Status {
	st := Status{Uplink: s.up.State()}
	if s.ms != nil {
		st.SpoolAge = s.ms.spool.OldestAge()
	}
	for _, ep := range s.reg.List() {
		es := EndpointStatus{Name: ep.Name, Addr: ep.Addr.String(), Protocol: string(ep.Protocol), Queued: s.px.Queued(ep.Name)}
		if ep.Addr6.IsValid() {
			es.Addr6 = ep.Addr6.String()
		}
		if ep.Protocol == registry.MQTT && s.ms != nil {
			es.Online = s.ms.broker.Connected(ep.Name)
			for _, rs := range s.ms.relay.Status() {
				if rs.Endpoint == ep.Name {
					es.Relay, es.Queued, es.BytesQueued = rs.State.String(), rs.Queued, rs.Bytes
				}
			}
		}
		if ep.Protocol == registry.CoAP {
			es.Spooled, es.SpoolBytes = s.px.Spooled(ep.Name)
		}
		if sess, ok := s.srv.Info(ep.Name); ok {
			es.Online, es.Parked, es.LastSeen = true, sess.Parked, sess.LastSeen
			es.BytesIn, es.BytesOut = sess.BytesIn, sess.BytesOut
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}

// reloadEndpoints re-reads the registry file and makes the running bridge
// match it (proxy.Reconcile): new endpoints served, removed ones revoked
// (revoke: DTLS session, MQTT connection, session, relay and spool) and
// dropped with their observations, queued requests and address, changed
// credentials applied by revoking only that endpoint, allow-list changes
// applied at once. Reconcile revokes every removed endpoint before it
// adds any, so a freed address is reused only after its old holder was
// cut off.
func reloadEndpoints(cfg *config.Config, px *proxy.Proxy, revoke func(name string) bool) (proxy.ReloadResult, error) {
	var reserved []netip.Addr
	if cfg.BridgeAddr.IsValid() {
		reserved = append(reserved, cfg.BridgeAddr)
	}
	fresh, err := registry.Open(filepath.Join(cfg.StateDir, "endpoints.json"), cfg.Prefix, reserved...)
	if err != nil {
		return proxy.ReloadResult{}, err
	}
	return px.Reconcile(fresh.List(), revoke)
}
