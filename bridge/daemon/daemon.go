// Package daemon composes the edge bridge: endpoint registry, site CA,
// userspace IP stack fed by the uplink, DTLS/CoAP downlink, CoAP proxy,
// and the HTTP /metrics and /status endpoints.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/proxy"
	"github.com/fleetgate/fleetgate/deploy/sdnotify"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/device"
	"github.com/fleetgate/fleetgate/ipstack"
)

// NewUplink returns the uplink for cfg: "none" drops everything,
// "l2tp-ipsec" is the uplink package's client (not yet started).
func NewUplink(cfg *config.Config, log *slog.Logger) (Uplink, error) {
	switch cfg.Uplink.Mode {
	case "none":
		return noneUplink{}, nil
	case "l2tp-ipsec":
		uc, err := ClientConfig(cfg, log)
		if err != nil {
			return nil, err
		}
		return newClientUplink(uc)
	}
	return nil, fmt.Errorf("daemon: unknown uplink mode %q", cfg.Uplink.Mode)
}

// OpenRegistry opens the endpoint registry and site CA of cfg.
func OpenRegistry(cfg *config.Config) (*device.Registry, *device.CA, error) {
	var reserved []netip.Addr
	if cfg.BridgeAddr.IsValid() {
		reserved = append(reserved, cfg.BridgeAddr)
	}
	reg, err := device.Open(filepath.Join(cfg.StateDir, "endpoints.json"), cfg.Prefix, reserved...)
	if err != nil {
		return nil, nil, err
	}
	ca, err := device.LoadOrCreateCA(filepath.Join(cfg.StateDir, "ca"), cfg.Site)
	if err != nil {
		return nil, nil, err
	}
	return reg, ca, nil
}

// EndpointStatus is one row of /status.
type EndpointStatus struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	Protocol string    `json:"protocol"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Queued   int       `json:"queued"`
	// Relay is the MQTT relay session's state and BytesQueued its spool
	// bytes (MQTT endpoints).
	Relay       string `json:"relay,omitempty"`
	BytesQueued int64  `json:"bytes_queued,omitempty"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
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

// RunWith is Run with Options.
func RunWith(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) error {
	reload := opts.Reload
	reg, ca, err := OpenRegistry(cfg)
	if err != nil {
		return err
	}
	up, err := NewUplink(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		_, _ = sdnotify.Stopping()
		_ = up.Close() // tears down PPP, L2TP and IKE gracefully
	}()
	st, err := ipstack.New(ipstack.Config{MTU: cfg.Uplink.MTU, Output: up.WritePacket, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	up.SetInbound(func(pkt []byte) { _ = st.InjectInbound(pkt) })
	up.SetStateHandler(func(u bool, reason string) {
		log.Info("uplink state", "up", u, "state", reason)
		if a, err := netip.ParseAddr(up.LocalAddr()); u && err == nil {
			// The PPP (IPCP) address, so the bridge itself is reachable.
			if err := st.AddAddress(netip.PrefixFrom(a, 32)); err != nil {
				log.Warn("uplink address", "addr", a, "err", err)
			}
		}
	})
	if cfg.BridgeAddr.IsValid() {
		if err := st.AddAddress(netip.PrefixFrom(cfg.BridgeAddr, 32)); err != nil {
			return err
		}
	}
	px, err := proxy.New(proxy.Config{Stack: st, Registry: reg, Central: cfg.Central, Hosts: cfg.Hosts,
		QueueLen: cfg.Downlink.QueueLen, QueueTTL: cfg.Downlink.QueueTTL, Logger: log})
	if err != nil {
		return err
	}
	if err := px.Start(); err != nil {
		return err
	}
	defer px.Close()
	srvCert, err := ca.IssueTLS("bridge."+cfg.Site, 1)
	if err != nil {
		return err
	}
	var ms *mqttSide
	if cfg.MQTT.Enabled {
		if ms, err = startMQTT(cfg, reg, ca, srvCert, st, log); err != nil {
			return err
		}
		defer ms.close()
	}
	srv, err := coap.New(coap.Config{ListenAddr: cfg.Downlink.CoAPListen, Registry: reg, ClientCAs: ca.Pool,
		Certificate: &srvCert, Handler: px.HandleDevice, OnSession: px.OnSession, Rate: cfg.Downlink.Rate,
		Burst: cfg.Downlink.Burst, IdleTimeout: cfg.Downlink.IdleTimeout, Logger: log})
	if err != nil {
		return err
	}
	px.SetSessions(srv.Session)
	go func() { _ = srv.Serve() }()
	defer func() { srv.Close(); srv.Wait() }()

	status := func() Status {
		s := Status{Uplink: up.State()}
		if ms != nil {
			s.SpoolAge = ms.spool.OldestAge()
		}
		for _, ep := range reg.List() {
			es := EndpointStatus{Name: ep.Name, Addr: ep.Addr.String(), Protocol: string(ep.Protocol), Queued: px.Queued(ep.Name)}
			if ep.Protocol == device.MQTT && ms != nil {
				es.Online = ms.broker.Connected(ep.Name)
				for _, rs := range ms.relay.Status() {
					if rs.Endpoint == ep.Name {
						es.Relay, es.Queued, es.BytesQueued = rs.State.String(), rs.Queued, rs.Bytes
					}
				}
			}
			if sess := srv.Session(ep.Name); sess != nil {
				es.Online, es.LastSeen = true, sess.LastSeen()
				es.BytesIn, es.BytesOut = sess.BytesIn.Load(), sess.BytesOut.Load()
			}
			s.Endpoints = append(s.Endpoints, es)
		}
		return s
	}
	preg := prometheus.NewRegistry()
	counter := func(name, help string, f func() uint64) {
		preg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
	}
	counter("coap_handshakes_ok_total", "DTLS sessions authenticated.", srv.Stats.HandshakesOK.Load)
	counter("coap_handshake_failures_total", "DTLS handshakes failed.", srv.Stats.HandshakeFailures.Load)
	counter("coap_unknown_identity_total", "Unknown PSK identities or CNs.", srv.Stats.UnknownIdentity.Load)
	counter("coap_rebinds_total", "Peer address changes kept by Connection ID.", srv.Stats.Rebinds.Load)
	counter("coap_requests_total", "CoAP requests from devices.", srv.Stats.Requests.Load)
	counter("coap_rate_limited_total", "Requests answered 4.29.", srv.Stats.RateLimited.Load)
	counter("proxy_upstream_total", "Device to central requests.", px.Stats.Upstream.Load)
	counter("proxy_upstream_errors_total", "Failed device to central requests.", px.Stats.UpstreamErrors.Load)
	counter("proxy_downstream_total", "Central to device requests.", px.Stats.Downstream.Load)
	counter("proxy_queued_total", "Central requests queued for sleeping devices.", px.Stats.Queued.Load)
	counter("proxy_expired_total", "Queued requests answered 5.04.", px.Stats.Expired.Load)
	if cu, ok := up.(*clientUplink); ok {
		registerUplink(preg, cu)
	}
	counter("ipstack_packets_out_total", "IP packets to the uplink.", st.Stats.PacketsOut.Load)
	counter("ipstack_packets_in_total", "IP packets from the uplink.", st.Stats.PacketsIn.Load)
	preg.MustRegister(endpointCollector{reg: reg, srv: srv, px: px})
	if ms != nil {
		preg.MustRegister(relayCollector{ms})
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(preg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(status())
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("daemon: http listen: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	up.Start()
	_, _ = sdnotify.Ready()
	if opts.Ready != nil {
		a := Addrs{CoAP: srv.Addr(), HTTP: ln.Addr()}
		if ms != nil {
			a.MQTTTLS, a.MQTTPlain = ms.broker.TLSAddr(), ms.broker.PlainAddr()
		}
		opts.Ready(a)
	}
	log.Info("bridge started", "coap", srv.Addr().String(), "http", ln.Addr().String(), "endpoints", reg.Len(), "uplink", up.State())

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("bridge stopping")
			return nil
		case now := <-tick.C:
			px.Tick(now)
		case <-reload:
			_, _ = sdnotify.Reloading()
			n, err := reloadEndpoints(cfg, reg, px)
			if err != nil {
				log.Warn("reload refused", "err", err)
			} else {
				log.Info("endpoints reloaded", "added", n, "endpoints", reg.Len())
			}
			if opts.Reloaded != nil {
				opts.Reloaded(n, err)
			}
			_, _ = sdnotify.Ready()
		}
	}
}

// reloadEndpoints adds the endpoints the registry file gained since reg was
// opened (removals need a restart: the proxy keeps their addresses).
func reloadEndpoints(cfg *config.Config, reg *device.Registry, px *proxy.Proxy) (int, error) {
	var reserved []netip.Addr
	if cfg.BridgeAddr.IsValid() {
		reserved = append(reserved, cfg.BridgeAddr)
	}
	fresh, err := device.Open(filepath.Join(cfg.StateDir, "endpoints.json"), cfg.Prefix, reserved...)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ep := range fresh.List() {
		if _, ok := reg.ByName(ep.Name); ok {
			continue
		}
		ep, err := reg.Add(ep)
		if err != nil {
			return n, err
		}
		if err := px.AddEndpoint(ep); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
