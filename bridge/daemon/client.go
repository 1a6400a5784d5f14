package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/uplink"
	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// ClientConfig builds the uplink.Config for cfg's l2tp-ipsec uplink
// (credentials are read from the files cfg names).
func ClientConfig(cfg *config.Config, log *slog.Logger) (uplink.Config, error) {
	uc, _, err := clientConfig(cfg, log)
	return uc, err
}

// clientConfig is ClientConfig with the uplink.crl holder (nil without
// one), which Reload re-reads.
func clientConfig(cfg *config.Config, log *slog.Logger) (uplink.Config, *gatewayCRL, error) {
	var crl *gatewayCRL
	u := cfg.Uplink
	tc := l2tpipsec.ClientConfig{
		Username:     u.PPPUser,
		Password:     u.PPPPassword,
		MRU:          u.MTU,
		EchoInterval: u.LCPEchoInterval,
		EchoFailures: u.LCPEchoFailures,
		HostName:     cfg.Site,
		Logger:       log,
		AuthMethods:  pppMethods(u.PPPMethods),
		IPv6:         cfg.IPv6Prefix.IsValid(),
	}
	tc.IKEProposals, tc.ESPProposals = u.IKEProposals, u.ESPProposals
	tc.DPDInterval = u.DPDInterval
	if u.PSK != "" {
		tc.PSK = []byte(u.PSK)
	} else {
		pair, err := tls.LoadX509KeyPair(u.Cert, u.Key)
		if err != nil {
			return uplink.Config{}, nil, fmt.Errorf("daemon: uplink cert: %w", err)
		}
		tc.Cert = &ike.LocalCert{Chain: pair.Certificate, Key: pair.PrivateKey}
		if u.CA == "" || u.GatewayID == "" {
			// config.Parse refuses this; a Config built in code must not
			// accept any certificate as the gateway either.
			return uplink.Config{}, nil, fmt.Errorf("daemon: uplink: certificate mode needs ca and gateway_id")
		}
		pem, err := os.ReadFile(u.CA)
		if err != nil {
			return uplink.Config{}, nil, fmt.Errorf("daemon: uplink ca: %w", err)
		}
		tc.CAs = x509.NewCertPool()
		if !tc.CAs.AppendCertsFromPEM(pem) {
			return uplink.Config{}, nil, fmt.Errorf("daemon: uplink ca %s: no certificate", u.CA)
		}
		// The gateway must be named by gateway_id and carry serverAuth
		// (ike.GatewayPolicy), and not be on uplink.crl.
		tc.GatewayPolicy = &ike.GatewayPolicy{ID: u.GatewayID}
		if u.CRL != "" || u.CRLURL != "" {
			ca, err := pemfile.ParseCert(pem)
			if err != nil {
				return uplink.Config{}, nil, fmt.Errorf("daemon: uplink ca %s: %w", u.CA, err)
			}
			crl = &gatewayCRL{path: u.CRL, ca: ca}
			if err := crl.load(); err != nil {
				return uplink.Config{}, nil, err
			}
			tc.GatewayPolicy.CRL = crl.get
		}
	}
	if u.LocalID != "" {
		tc.LocalID = &ike.Identification{Type: ike.IDFQDN, Data: []byte(u.LocalID)}
	}
	// RequestRoutes: the gateway's pushed routes (split tunnelling set
	// centrally) are asked for after every connect and shown in status.
	uc := uplink.Config{Tunnel: tc, MinBackoff: u.MinBackoff, MaxBackoff: u.MaxBackoff, Logger: log, RequestRoutes: true}
	for _, g := range u.Gateways {
		uc.Gateways = append(uc.Gateways, uplink.Gateway{Addr: g, NATTPort: u.NATTPort})
	}
	return uc, crl, nil
}

// clientUplink adapts uplink.Client to Uplink.
type clientUplink struct {
	c  *uplink.Client
	mu sync.Mutex
	fn func(up bool, reason string)
	// watchers get every state change in full (Site.WatchUplink).
	watchers []func(uplink.Status)
	// failures counts failed attempts by phase; lastFailures is the
	// Status.Failures already counted (guarded by mu).
	failures     *prometheus.CounterVec
	lastFailures uint64
	// refused counts attempts refused on security grounds (the peer is
	// not the configured gateway, or asked for a PPP method we do not
	// allow); crl is uplink.crl (nil without one); log gets the refusals.
	refused *prometheus.CounterVec
	crl     *gatewayCRL
	log     *slog.Logger
}

// newClientUplink makes the L2TP/IPsec uplink; Start begins dialling.
func newClientUplink(uc uplink.Config, crl *gatewayCRL) (*clientUplink, error) {
	cu := &clientUplink{failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "uplink_failures_by_phase_total", Help: "Failed tunnel attempts by the phase they failed in (IKE, ESP, L2TP, PPP...).",
	}, []string{"phase"}), refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "uplink_refused_total", Help: "Tunnel attempts we refused: reason not_gateway (the peer's certificate is not the configured gateway's: name, key usage, CRL), ppp_method (the server asked for a PPP method we do not allow; no password sent) or revoked_live (a live tunnel closed: a new CRL lists the gateway's certificate).",
	}, []string{"reason"}), crl: crl, log: uc.Logger}
	if cu.log == nil {
		cu.log = slog.New(slog.DiscardHandler)
	}
	cu.refused.WithLabelValues("not_gateway")
	cu.refused.WithLabelValues("ppp_method")
	cu.refused.WithLabelValues("revoked_live")
	uc.OnState = cu.onState
	c, err := uplink.New(uc)
	if err != nil {
		return nil, err
	}
	cu.c = c
	return cu, nil
}

func (cu *clientUplink) onState(s uplink.Status) {
	cu.mu.Lock()
	fn, watchers := cu.fn, cu.watchers
	var why string
	if s.Failures > cu.lastFailures {
		cu.failures.WithLabelValues(fmt.Sprint(s.LastPhase)).Add(float64(s.Failures - cu.lastFailures))
		cu.lastFailures = s.Failures
		if why = refusal(s.LastErr); why != "" {
			cu.refused.WithLabelValues(why).Inc()
		}
	}
	cu.mu.Unlock()
	switch why {
	case "not_gateway":
		cu.log.Warn("uplink refused: the peer is not the configured gateway", "gateway", s.Gateway, "reason", why, "err", s.LastErr)
	case "ppp_method":
		cu.log.Warn("uplink refused: the server asked for a PPP authentication method we do not allow; no password sent",
			"gateway", s.Gateway, "reason", why, "err", s.LastErr)
	}
	if fn != nil {
		fn(s.State == uplink.StateUp, describe(s))
	}
	for _, w := range watchers {
		w(s)
	}
}

// watch adds fn to the functions told of every state change.
func (cu *clientUplink) watch(fn func(uplink.Status)) {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	cu.watchers = append(cu.watchers[:len(cu.watchers):len(cu.watchers)], fn)
}

func describe(s uplink.Status) string {
	d := s.State.String()
	if s.Gateway != "" {
		d += " gateway=" + s.Gateway
	}
	if s.Addr.IsValid() {
		d += " addr=" + s.Addr.String()
	}
	if s.Tunnel.IPv6 {
		d += " ipv6cp=up link_local6=" + s.Tunnel.LinkLocal6.String()
	}
	if s.RoutesKnown {
		rs := make([]string, len(s.Routes))
		for i, r := range s.Routes {
			rs[i] = r.String()
		}
		d += " routes=" + strings.Join(rs, ",")
	}
	if s.LastErr != nil {
		d += fmt.Sprintf(" last_failure_phase=%v last_failure=%q", s.LastPhase, s.LastErr.Error())
	}
	return d
}

func (cu *clientUplink) Start() { cu.c.Start() }

// reloadCRL re-reads uplink.crl (SIGHUP); a bad file keeps the old CRL.
func (cu *clientUplink) reloadCRL() error {
	if cu.crl == nil {
		return nil
	}
	if err := cu.crl.load(); err != nil {
		return err
	}
	cu.dropIfRevoked()
	return nil
}

// dropIfRevoked closes the live tunnel if the gateway's certificate is on
// the current CRL: the uplink client dials again, and that phase 1
// refuses a gateway that still presents it.
func (cu *clientUplink) dropIfRevoked() {
	t := cu.c.Tunnel()
	if t == nil || cu.crl == nil {
		return
	}
	pc, rl := t.PeerCertificate(), cu.crl.get()
	if pc == nil || rl == nil {
		return
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(pc.SerialNumber) == 0 {
			cu.refused.WithLabelValues("revoked_live").Inc()
			cu.log.Warn("uplink refused: the gateway's certificate was revoked; closing the live tunnel",
				"certificate", pc.Subject.CommonName, "serial", pc.SerialNumber.Text(16), "crl_number", rl.Number)
			_ = t.Close()
			return
		}
	}
}

func (cu *clientUplink) WritePacket(pkt []byte) error {
	err := cu.c.WritePacket(pkt)
	if errors.Is(err, uplink.ErrDown) {
		return nil // dropped while down; TCP retransmits, CoAP/MQTT retry
	}
	return err
}

func (cu *clientUplink) SetInbound(fn func(pkt []byte)) { cu.c.SetPacketHandler(fn) }

func (cu *clientUplink) LocalAddr() string {
	if a := cu.c.LocalAddr(); a.IsValid() {
		return a.String()
	}
	return ""
}

func (cu *clientUplink) SetStateHandler(fn func(up bool, reason string)) {
	cu.mu.Lock()
	cu.fn = fn
	cu.mu.Unlock()
}

func (cu *clientUplink) State() string { return describe(cu.c.Status()) }

// Status is the client's full snapshot (counters, tunnel details).
func (cu *clientUplink) Status() uplink.Status { return cu.c.Status() }

func (cu *clientUplink) Close() error { return cu.c.Close() }

// registerUplink exports the client's state and counters.
func registerUplink(reg *prometheus.Registry, cu *clientUplink) {
	gauge := func(name, help string, f func(uplink.Status) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return f(cu.Status()) }))
	}
	counter := func(name, help string, f func(uplink.Status) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(cu.Status())) }))
	}
	reg.MustRegister(cu.failures, cu.refused)
	gauge("uplink_up", "1 while the L2TP/IPsec tunnel is up.", func(s uplink.Status) float64 {
		if s.State == uplink.StateUp {
			return 1
		}
		return 0
	})
	gauge("uplink_state", "Client state (0 idle, 1 connecting, 2 up, 3 backoff, 4 stopped).",
		func(s uplink.Status) float64 { return float64(s.State) })
	gauge("uplink_pushed_routes", "Routes the gateway pushed for the current tunnel (DHCPINFORM); -1 while unknown.",
		func(s uplink.Status) float64 {
			if !s.RoutesKnown {
				return -1
			}
			return float64(len(s.Routes))
		})
	counter("uplink_route_reply_errors_total", "Malformed DHCP replies from the gateway.",
		func(s uplink.Status) uint64 { return s.RouteErrors })
	counter("uplink_attempts_total", "Tunnel dial attempts.", func(s uplink.Status) uint64 { return s.Attempts })
	counter("uplink_connects_total", "Tunnels established.", func(s uplink.Status) uint64 { return s.Connects })
	counter("uplink_failures_total", "Failed dial attempts.", func(s uplink.Status) uint64 { return s.Failures })
	counter("uplink_tunnel_bytes_in_total", "IPv4 bytes received through the current tunnel.",
		func(s uplink.Status) uint64 { return s.Tunnel.BytesIn })
	counter("uplink_tunnel_bytes_out_total", "IPv4 bytes sent through the current tunnel.",
		func(s uplink.Status) uint64 { return s.Tunnel.BytesOut })
}
