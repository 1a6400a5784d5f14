// Package config loads the edge bridge's YAML configuration
// (configs/bridge.yaml is the annotated reference).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetgate/fleetgate/internal/yamlcheck"

	"github.com/fleetgate/fleetgate/internal/secretfile"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("config: invalid")

// Config is the whole bridge configuration.
type Config struct {
	// Site names the site; Prefix is its routed prefix; BridgeAddr is the
	// bridge's own address in it (never given to an endpoint).
	Site       string       `yaml:"site"`
	Prefix     netip.Prefix `yaml:"prefix"`
	BridgeAddr netip.Addr   `yaml:"bridge_address"`
	// IPv6Prefix is the site's IPv6 prefix (the gateway identity's
	// ipv6_prefix, at most /64). When set, the uplink negotiates IPV6CP
	// and every endpoint also gets an IPv6 address in it, derived from its
	// IPv4 host number (sensor-17 → <prefix>::17; downlink/registry addr6.go).
	IPv6Prefix netip.Prefix `yaml:"ipv6_prefix"`
	// StateDir holds endpoints.json and the site CA.
	StateDir string `yaml:"state_dir"`
	// Downlink is the DTLS/CoAP listener.
	Downlink Downlink `yaml:"downlink"`
	// Central is the central CoAP service device requests go to.
	Central netip.AddrPort `yaml:"central_coap"`
	// Hosts names Proxy-Uri hosts.
	Hosts map[string]netip.Addr `yaml:"hosts"`
	// Uplink selects and configures the VPN uplink.
	Uplink Uplink `yaml:"uplink"`
	// MQTT is the site broker and its relay to the central broker.
	MQTT MQTT `yaml:"mqtt"`
	// CoAPSpool is store-and-forward for device → central CoAP.
	CoAPSpool CoAPSpool `yaml:"coap_spool"`
	// Listen is the HTTP address for /metrics, /status and the status
	// page.
	Listen string `yaml:"http_listen"`
	// ControlSocket is the unix control socket (mode 0660) that `bridge
	// status`, `bridge endpoints` and `bridge uplink` ask; default
	// <state_dir>/control.sock. See ControlSocketPath.
	ControlSocket string `yaml:"control_socket"`
	// StatusPage is the fleet status page on http_listen.
	StatusPage StatusPage `yaml:"status_page"`
	// LogLevel is debug, info, warn or error; LogFormat json (default) or
	// text.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
}

// StatusPage configures the fleet status page served on http_listen: /
// (the page) and /api/ (its JSON views). On a loopback address it needs no
// credential; on any other address the bearer token of TokenFile is
// required and, without one, the page is refused (no default credential).
type StatusPage struct {
	// Enabled: default true (read-only; http_listen is 127.0.0.1 by
	// default).
	Enabled *bool `yaml:"enabled"`
	// TokenFile holds the bearer token (mode 0600); required on a
	// non-loopback http_listen and for actions.
	TokenFile string `yaml:"token_file"`
	// Actions enables "remove endpoint" on the page (token required,
	// every action logged). Default false: read-only.
	Actions bool `yaml:"actions"`
	// QuietAfter: an endpoint seen before but silent this long is listed
	// as quiet (default 10m).
	QuietAfter time.Duration `yaml:"quiet_after"`
	// SampleInterval is the charts' sampling interval (default 5s; 360
	// points are kept per series).
	SampleInterval time.Duration `yaml:"sample_interval"`
	// TLSCert and TLSKey make http_listen HTTPS (/metrics and /status
	// too); ClientCA (needs them) asks clients for a certificate of that
	// CA, and a verified one is a credential for the page like the token.
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	ClientCA string `yaml:"client_ca"`

	// Token is TokenFile's content (read by Load).
	Token string `yaml:"-"`
}

// On reports whether the page is served.
func (s StatusPage) On() bool { return s.Enabled == nil || *s.Enabled }

// Downlink configures the DTLS/CoAP side.
type Downlink struct {
	CoAPListen  string        `yaml:"coap_listen"`
	AdvertHost  string        `yaml:"advertised_host"`
	Rate        float64       `yaml:"rate"`
	Burst       int           `yaml:"burst"`
	QueueLen    int           `yaml:"queue_len"`
	QueueTTL    time.Duration `yaml:"queue_ttl"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxPendingHandshakes, MaxPendingPerSource and PendingTimeout bound
	// DTLS handshakes after the stateless cookie exchange, before the
	// endpoint is authenticated (0: downlink/coap defaults 512, 8, 20s).
	MaxPendingHandshakes int           `yaml:"max_pending_handshakes"`
	MaxPendingPerSource  int           `yaml:"max_pending_per_source"`
	PendingTimeout       time.Duration `yaml:"pending_timeout"`
	// HandshakeBudget is the share of the CPUs (GOMAXPROCS) that DTLS
	// handshakes may use: below the caps above they start at the rate
	// that affords, measured (0: default 0.8; negative: caps only).
	HandshakeBudget float64 `yaml:"handshake_budget"`
	// MaxBlockTransfers bounds one device's block-wise uploads being
	// reassembled at once (0: default 16).
	MaxBlockTransfers int `yaml:"max_block_transfers"`
	// NStart bounds each endpoint's CoAP exchanges in flight per
	// direction, MaxInFlight those of the whole bridge; a request over
	// either is answered 5.03 with Max-Age (0: proxy defaults 4, 4096).
	NStart      int `yaml:"nstart"`
	MaxInFlight int `yaml:"max_in_flight"`
	// ParkAfter parks a DTLS session idle that long: its state is kept,
	// its conn and goroutines are not (0: default 60s; negative: never).
	ParkAfter time.Duration `yaml:"park_after"`
	// KeepSessions saves the DTLS sessions in state_dir across a restart
	// so devices resume without a handshake (default true).
	KeepSessions *bool `yaml:"keep_sessions"`
}

// MQTT configures the site broker (downlink/mqtt), the per-endpoint relay
// to the central broker (bridge/mqttrelay) and its spool (bridge/spool).
type MQTT struct {
	// Enabled turns the broker and relay on.
	Enabled bool `yaml:"enabled"`
	// TLSListen is the TLS listener (site certificate, client
	// certificates of the site CA accepted); PlainListen enables plain
	// MQTT (off when empty, the default).
	TLSListen   string `yaml:"tls_listen"`
	PlainListen string `yaml:"plain_listen"`
	// Central is the central broker (inside the VPN); CentralTLS turns TLS
	// on toward it, verified with CentralCA (PEM file) and CentralName.
	Central     netip.AddrPort `yaml:"central"`
	CentralTLS  bool           `yaml:"central_tls"`
	CentralCA   string         `yaml:"central_ca"`
	CentralName string         `yaml:"central_server_name"`
	// TopicPrefix maps device topics to central ones ("{site}" and
	// "{endpoint}" are replaced); Commands are the device-side filters
	// subscribed centrally.
	TopicPrefix string   `yaml:"topic_prefix"`
	Commands    []string `yaml:"commands"`
	// SpoolMaxBytes bounds the store-and-forward queue (overflow: QoS 0
	// dropped oldest first, then new QoS 1/2 refused; see bridge/spool).
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// SpoolEndpointMaxBytes is one endpoint's share of the spool (0:
	// spool_max_bytes / 8, at least 1 MiB).
	SpoolEndpointMaxBytes int64 `yaml:"spool_endpoint_max_bytes"`
	// SessionSync fsyncs every device session update (power-loss safe).
	SessionSync bool `yaml:"session_sync"`
	// PublishRate limits each device's publishes per second (0: none).
	PublishRate float64 `yaml:"publish_rate"`
	// PublishByteRate limits each device's published bytes per second
	// (topic + payload; 0: 64 KiB/s with a 1 MiB burst, -1: none).
	PublishByteRate float64 `yaml:"publish_byte_rate"`
	// RevokeDrain: when an MQTT endpoint is removed or re-keyed, its device
	// is disconnected at once; with 0 (default) what the spool still holds
	// for it is dropped, with a duration its central session first keeps
	// delivering what was accepted before the removal, for at most this
	// long (the reload waits; the address is freed only after).
	RevokeDrain time.Duration `yaml:"revoke_drain"`
	// CentralInflight is how many QoS 1/2 messages one endpoint may have
	// unacknowledged toward the central broker (default 20). It must not
	// exceed the broker's per-client limit on unreleased QoS 2 messages
	// (mosquitto's max_inflight_messages, 20 by default): above it an MQTT
	// 3.1.1 broker may drop the message after a normal-looking PUBREC.
	CentralInflight int `yaml:"central_inflight"`
	// Bounds on what one device or an unauthenticated peer can make the
	// broker keep (downlink/mqtt bounds.go; 0: its defaults).
	MaxPacketSize       uint32        `yaml:"max_packet_size"`
	MaxTopicLength      int           `yaml:"max_topic_length"`
	TopicAliasMaximum   uint16        `yaml:"topic_alias_maximum"`
	MaxSubscriptions    int           `yaml:"max_subscriptions"`
	RetainedPerEndpoint int           `yaml:"retained_per_endpoint"`
	ReceiveMaximum      uint16        `yaml:"receive_maximum"`
	MaxQueued           uint16        `yaml:"max_queued"`
	SessionExpiry       time.Duration `yaml:"session_expiry"`
	MaxPendingConnects  int           `yaml:"max_pending_connects"`
	MaxPendingPerSource int           `yaml:"max_pending_connects_per_source"`
}

// CoAPSpool configures store-and-forward for device → central CoAP
// requests (bridge/proxy coapspool.go, bridge/spool in state_dir/coap-spool).
type CoAPSpool struct {
	// Paths maps a request path (exact, or a prefix ending in "*") to
	// "spool" or "passthrough"; POST/PUT to a spool path are stored and
	// answered 2.04 at once, everything else is passthrough (5.03 with
	// Max-Age = retry_after while the uplink is down). Default:
	// {"/telemetry": spool}; an empty map spools nothing.
	Paths map[string]string `yaml:"paths"`
	// MaxBytes bounds the spool (default 64 MiB); EndpointMaxBytes is one
	// endpoint's share (0: max_bytes / 8, at least 1 MiB).
	MaxBytes         int64 `yaml:"max_bytes"`
	EndpointMaxBytes int64 `yaml:"endpoint_max_bytes"`
	// RetryAfter is the Max-Age of a 5.03 (default 30s).
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Uplink configures the L2TP/IPsec client (wired by the uplink package).
type Uplink struct {
	// Mode is "none" (local testing: packets to the VPN are dropped and
	// counted) or "l2tp-ipsec".
	Mode string `yaml:"mode"`
	// Gateways are IKE addresses ("host:port" or "host", port 500) in
	// order of preference; NATTPort is their NAT-T port (RFC 3947, 4500).
	Gateways []string `yaml:"gateways"`
	NATTPort uint16   `yaml:"nat_t_port"`
	// PSK (or PSKFile, a file holding it), or Cert/Key (PEM files) with
	// CA (PEM file) for signatures. Secret files must be owner-only
	// (mode 0600, as ssh wants a key); a config file holding psk or
	// ppp_password inline must be owner-only itself.
	PSK     string `yaml:"psk"`
	PSKFile string `yaml:"psk_file"`
	Cert    string `yaml:"cert"`
	Key     string `yaml:"key"`
	CA      string `yaml:"ca"`
	// GatewayID is the gateway's name, which must be a subjectAltName
	// (DNS, IP or e-mail) of a gateway certificate (extended key usage
	// serverAuth, as `gateway pki issue --kind gateway` makes) of CA;
	// required with certificates. CRL (PEM or DER file, optional) lists
	// revoked certificates of CA; it is re-read on SIGHUP.
	GatewayID string `yaml:"gateway_id"`
	CRL       string `yaml:"crl"`
	// CRLURL, optional with certificates, is an http:// URL inside the VPN
	// (host: an IPv4 address or a name from hosts:) where the CA's CRL is
	// fetched through the tunnel every CRLRefresh (default 5m; from
	// bridge_address, else the PPP address). A fetched CRL must be signed
	// by CA and not older (CRL number) than the one in use; it applies to
	// the next phase 1.
	CRLURL     string        `yaml:"crl_url"`
	CRLRefresh time.Duration `yaml:"crl_refresh"`
	// PPPMethods are the PPP authentication methods we accept (default
	// [mschapv2]); chap and pap are an explicit opt-in: whoever plays the
	// gateway would get the password in clear (pap) or an offline-
	// crackable exchange (chap).
	PPPMethods []string `yaml:"ppp_methods"`
	// LocalID is our IKE identity as an FQDN (sites behind one NAT each
	// need their own); empty: our address.
	LocalID     string `yaml:"local_id"`
	PPPUser     string `yaml:"ppp_user"`
	PPPPassword string `yaml:"ppp_password"`
	// PPPPasswordFile is a file holding the PPP password (owner-only).
	PPPPasswordFile string `yaml:"ppp_password_file"`
	MTU             int    `yaml:"mtu"`
	// IKEProposals and ESPProposals are strongSwan-style proposal lists;
	// empty takes the uplink's defaults.
	IKEProposals string `yaml:"ike_proposals"`
	ESPProposals string `yaml:"esp_proposals"`
	// DPDInterval (RFC 3706; negative disables) and LCPEchoInterval (PPP
	// keepalive) with LCPEchoFailures missed echoes before the link is down.
	DPDInterval     time.Duration `yaml:"dpd_interval"`
	LCPEchoInterval time.Duration `yaml:"lcp_echo_interval"`
	LCPEchoFailures int           `yaml:"lcp_echo_failures"`
	// MinBackoff and MaxBackoff bound the full-jitter reconnect delay.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Load reads and validates a config file, filling defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err == nil {
		err = c.loadSecrets(path, b)
	}
	if err != nil {
		var es Errors
		if errors.As(err, &es) {
			return nil, es.in(path)
		}
		var ce *Error
		if errors.As(err, &ce) && ce.Line > 0 {
			return nil, fmt.Errorf("%s:%w", path, err) // file:line: what
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// loadSecrets reads uplink.psk_file and uplink.ppp_password_file
// (relative to the config file) when the uplink uses them, refusing files
// that group or others may access (internal/secretfile); with psk or
// ppp_password inline, the config file itself must be owner-only.
func (c *Config) loadSecrets(path string, b []byte) error {
	u := &c.Uplink
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root) // Parse decoded it
	fail := func(key string, err error) error {
		return &Error{Line: lineOf(&root, key), Msg: key + ": " + err.Error()}
	}
	rel := func(f string) string {
		if filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(filepath.Dir(path), f)
	}
	var err error
	for _, f := range []*string{&c.StatusPage.TLSCert, &c.StatusPage.TLSKey, &c.StatusPage.ClientCA} {
		if *f != "" {
			*f = rel(*f)
		}
	}
	if sp := &c.StatusPage; sp.TokenFile != "" {
		sp.TokenFile = rel(sp.TokenFile)
		if sp.Token, err = secretfile.Read(sp.TokenFile); err != nil {
			return fail("status_page.token_file", err)
		}
	}
	if u.Mode != "l2tp-ipsec" {
		return nil
	}
	if u.PSKFile != "" {
		if u.PSK, err = secretfile.Read(rel(u.PSKFile)); err != nil {
			return fail("uplink.psk_file", err)
		}
	} else if u.PSK != "" {
		if err := secretfile.Check(path); err != nil {
			return fail("uplink.psk", fmt.Errorf("inline secret: move it to uplink.psk_file, or: %w", err))
		}
	}
	if u.PPPPasswordFile != "" {
		if u.PPPPassword, err = secretfile.Read(rel(u.PPPPasswordFile)); err != nil {
			return fail("uplink.ppp_password_file", err)
		}
	} else if u.PPPPassword != "" {
		if err := secretfile.Check(path); err != nil {
			return fail("uplink.ppp_password", fmt.Errorf("inline secret: move it to uplink.ppp_password_file, or: %w", err))
		}
	}
	return nil
}

// ControlSocketPath is control_socket, or <state_dir>/control.sock.
func (c *Config) ControlSocketPath() string {
	if c.ControlSocket != "" {
		return c.ControlSocket
	}
	return filepath.Join(c.StateDir, "control.sock")
}

// Parse decodes and validates YAML (unknown keys are errors).
func Parse(b []byte) (*Config, error) {
	c := &Config{
		StateDir: "/var/lib/fleetgate-bridge",
		Downlink: Downlink{CoAPListen: "0.0.0.0:5684"},
		Uplink:   Uplink{Mode: "none"},
		MQTT:     MQTT{TLSListen: "0.0.0.0:8883"},
		Listen:   "127.0.0.1:9420",
		LogLevel: "info",
	}
	var root yaml.Node
	if yaml.Unmarshal(b, &root) == nil {
		// Unknown keys and wrong types, every one, by key path and line
		// with the closest valid key (yaml.v3's messages name Go types).
		if ps := yamlcheck.Check(&root, reflect.TypeFor[Config]()); len(ps) > 0 {
			es := make(Errors, 0, len(ps))
			for _, p := range ps {
				es = append(es, &Error{Line: p.Line, Msg: p.Msg})
			}
			return nil, es
		}
	}
	dec := yaml.NewDecoder(bytesReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		e := yamlError(err)
		if e.Line == 0 && yaml.Unmarshal(b, &root) == nil {
			// A TextUnmarshaler's error (netip, ...) carries no line:
			// find the value it quotes.
			e.Line = lineOfValue(&root, e.Msg)
		}
		return nil, e
	}
	_ = yaml.Unmarshal(b, &root) // decoded above, so it parses
	fail := func(key, msg string) error {
		return &Error{Line: lineOf(&root, key), Msg: msg}
	}
	if !c.Prefix.IsValid() || !c.Prefix.Addr().Is4() || c.Prefix.Bits() > 30 {
		return nil, fail("prefix", "prefix must be an IPv4 prefix of /30 or larger")
	}
	if p := c.IPv6Prefix; p.IsValid() && (!p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 64) {
		return nil, fail("ipv6_prefix", "ipv6_prefix must be an IPv6 prefix of /64 or shorter (the identity's ipv6_prefix at the gateway, e.g. 2001:db8:8::/64)")
	}
	if c.BridgeAddr.IsValid() && !c.Prefix.Contains(c.BridgeAddr) {
		return nil, fail("bridge_address", "bridge_address outside prefix")
	}
	if c.Uplink.Mode != "none" && c.Uplink.Mode != "l2tp-ipsec" {
		return nil, fail("uplink.mode", "uplink.mode must be none or l2tp-ipsec")
	}
	if c.Uplink.Mode == "l2tp-ipsec" {
		u := c.Uplink
		switch {
		case len(u.Gateways) == 0:
			return nil, fail("uplink.gateways", "uplink.gateways is empty")
		case u.PSK == "" && u.PSKFile == "" && (u.Cert == "" || u.Key == ""):
			return nil, fail("uplink.psk", "uplink needs psk_file (or psk), or cert and key")
		case u.PSK != "" && u.PSKFile != "":
			return nil, fail("uplink.psk_file", "uplink: psk and psk_file are exclusive (keep psk_file)")
		case (u.PSK != "" || u.PSKFile != "") && u.Cert != "":
			return nil, fail("uplink.cert", "uplink: psk and cert are exclusive")
		case u.PPPPassword != "" && u.PPPPasswordFile != "":
			return nil, fail("uplink.ppp_password_file", "uplink: ppp_password and ppp_password_file are exclusive (keep ppp_password_file)")
		case u.Cert != "" && u.CA == "":
			return nil, fail("uplink.cert", "uplink: certificate mode needs uplink.ca (the CA that issued the gateway's certificate), else any certificate would do")
		case u.Cert != "" && u.GatewayID == "":
			return nil, fail("uplink.cert", "uplink: certificate mode needs uplink.gateway_id (a subjectAltName of the gateway's certificate, e.g. gw1.example.net), else any certificate of the CA would pass as the gateway")
		case u.CRLURL != "" && !validCRLURL(u.CRLURL, c.Hosts):
			return nil, fail("uplink.crl_url", "uplink.crl_url: want http://HOST[:PORT]/PATH with HOST an IPv4 address inside the VPN or a name from hosts:")
		case u.CRLRefresh < 0 || (u.CRLRefresh > 0 && u.CRLRefresh < 10*time.Second):
			return nil, fail("uplink.crl_refresh", "uplink.crl_refresh must be at least 10s (0: default 5m)")
		case u.Cert == "" && (u.GatewayID != "" || u.CRL != "" || u.CRLURL != ""):
			return nil, fail("uplink.gateway_id", "uplink.gateway_id and uplink.crl apply to certificate mode only (remove them, or use cert/key/ca)")
		case badMethods(u.PPPMethods):
			return nil, fail("uplink.ppp_methods", "uplink.ppp_methods: want a list of mschapv2, chap, pap (default [mschapv2])")
		case u.PPPUser == "":
			return nil, fail("uplink.ppp_user", "uplink.ppp_user is empty")
		case badList(u.IKEProposals, func(p string) error { _, err := ike.ParseIKEProposal(p); return err }):
			return nil, fail("uplink.ike_proposals", "uplink.ike_proposals: want cipher-hash-group, ... (e.g. aes256-sha256-modp2048)")
		case badList(u.ESPProposals, func(p string) error { _, err := ike.ParseESPProposal(p); return err }):
			return nil, fail("uplink.esp_proposals", "uplink.esp_proposals: want aes128gcm16 or cipher-integ, ... (e.g. aes256-sha1)")
		case u.MinBackoff < 0 || u.MaxBackoff < 0 || (u.MaxBackoff > 0 && u.MaxBackoff < u.MinBackoff):
			return nil, fail("uplink.max_backoff", "uplink: bad min_backoff/max_backoff")
		}
	}
	switch d := c.Downlink; {
	case d.MaxPendingHandshakes < 0:
		return nil, fail("downlink.max_pending_handshakes", "downlink.max_pending_handshakes must be positive (0: default 512)")
	case d.MaxPendingPerSource < 0:
		return nil, fail("downlink.max_pending_per_source", "downlink.max_pending_per_source must be positive (0: default 8)")
	case d.MaxBlockTransfers < 0:
		return nil, fail("downlink.max_block_transfers", "downlink.max_block_transfers must be positive (0: default 16)")
	case d.HandshakeBudget > 1:
		return nil, fail("downlink.handshake_budget", "downlink.handshake_budget is a share of the CPUs between 0 and 1, such as 0.8 (0: default; negative: no budget, the pending caps only)")
	case d.PendingTimeout < 0:
		return nil, fail("downlink.pending_timeout", "downlink.pending_timeout must be a positive duration such as 20s (0: default)")
	case d.NStart < 0:
		return nil, fail("downlink.nstart", "downlink.nstart must be positive (0: default 4)")
	case d.MaxInFlight < 0:
		return nil, fail("downlink.max_in_flight", "downlink.max_in_flight must be positive (0: default 4096)")
	}
	if c.MQTT.Enabled && !c.MQTT.Central.IsValid() {
		return nil, fail("mqtt.central", "mqtt.central (the central broker's address:port) is required")
	}
	if c.MQTT.SpoolMaxBytes < 0 || c.MQTT.SpoolEndpointMaxBytes < 0 {
		return nil, fail("mqtt.spool_endpoint_max_bytes", "mqtt.spool_max_bytes and spool_endpoint_max_bytes must not be negative")
	}
	cs := &c.CoAPSpool
	if cs.Paths == nil {
		cs.Paths = map[string]string{"/telemetry": "spool"}
	}
	for path, mode := range cs.Paths {
		if !strings.HasPrefix(path, "/") || (mode != "spool" && mode != "passthrough") {
			return nil, fail("coap_spool.paths", fmt.Sprintf("coap_spool.paths: %q: %q: want a path starting with / (a trailing * matches a prefix) and spool or passthrough", path, mode))
		}
	}
	switch {
	case cs.MaxBytes < 0 || cs.EndpointMaxBytes < 0:
		return nil, fail("coap_spool.max_bytes", "coap_spool.max_bytes and endpoint_max_bytes must not be negative (0: default)")
	case cs.EndpointMaxBytes > 0 && cs.MaxBytes > 0 && cs.EndpointMaxBytes > cs.MaxBytes:
		return nil, fail("coap_spool.endpoint_max_bytes", "coap_spool.endpoint_max_bytes must not exceed max_bytes")
	case cs.RetryAfter < 0 || cs.RetryAfter > 0 && cs.RetryAfter < time.Second:
		return nil, fail("coap_spool.retry_after", "coap_spool.retry_after must be at least 1s (Max-Age is in seconds)")
	}
	switch m := c.MQTT; {
	case m.MaxTopicLength < 0:
		return nil, fail("mqtt.max_topic_length", "mqtt.max_topic_length must be positive (0: default 256)")
	case m.MaxSubscriptions < 0:
		return nil, fail("mqtt.max_subscriptions", "mqtt.max_subscriptions must be positive (0: default 16)")
	case m.RetainedPerEndpoint < 0:
		return nil, fail("mqtt.retained_per_endpoint", "mqtt.retained_per_endpoint must be 0 (keep none, the default) or more")
	case m.SessionExpiry < 0:
		return nil, fail("mqtt.session_expiry", "mqtt.session_expiry must be a positive duration such as 72h (0: default)")
	case m.MaxPendingConnects < 0 || m.MaxPendingPerSource < 0:
		return nil, fail("mqtt.max_pending_connects", "mqtt.max_pending_connects and max_pending_connects_per_source must be positive (0: defaults 128, 8)")
	}
	if c.MQTT.RevokeDrain < 0 || c.MQTT.RevokeDrain > 5*time.Minute {
		return nil, fail("mqtt.revoke_drain", "mqtt.revoke_drain must be between 0 (drop a revoked endpoint's queued messages) and 5m")
	}
	if c.MQTT.CentralInflight < 0 || c.MQTT.CentralInflight > 65535 {
		return nil, fail("mqtt.central_inflight", "mqtt.central_inflight must be 1..65535 (0: default 20)")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fail("log_level", "log_level must be debug, info, warn or error")
	}
	if c.LogFormat != "" && c.LogFormat != "json" && c.LogFormat != "text" {
		return nil, fail("log_format", "log_format must be json or text")
	}
	sp := &c.StatusPage
	switch {
	case sp.QuietAfter == 0:
		sp.QuietAfter = 10 * time.Minute
	case sp.QuietAfter < time.Second:
		return nil, fail("status_page.quiet_after", "status_page.quiet_after must be at least 1s (default 10m)")
	}
	switch {
	case sp.SampleInterval == 0:
		sp.SampleInterval = 5 * time.Second
	case sp.SampleInterval < 100*time.Millisecond:
		return nil, fail("status_page.sample_interval", "status_page.sample_interval must be at least 100ms (default 5s)")
	}
	if sp.Actions && sp.TokenFile == "" && sp.ClientCA == "" {
		return nil, fail("status_page.actions", "status_page.actions needs status_page.token_file or client_ca (actions always require a credential)")
	}
	switch {
	case (sp.TLSCert == "") != (sp.TLSKey == ""):
		return nil, fail("status_page.tls_cert", "status_page.tls_cert and tls_key go together (http_listen's HTTPS certificate and key)")
	case sp.ClientCA != "" && sp.TLSCert == "":
		return nil, fail("status_page.client_ca", "status_page.client_ca needs tls_cert and tls_key (client certificates need HTTPS)")
	}
	if c.Site == "" {
		c.Site = "site"
	}
	if !siteName.MatchString(c.Site) {
		return nil, fail("site", "site must be letters, digits, '.', '_' or '-' (it is part of central MQTT client IDs and topics)")
	}
	return c, nil
}

var siteName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validCRLURL reports whether u is http://HOST[:PORT]/... with HOST an
// IPv4 literal or a name from hosts (there is no DNS inside the VPN).
func validCRLURL(u string, hosts map[string]netip.Addr) bool {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" || p.Host == "" || p.User != nil {
		return false
	}
	if a, err := netip.ParseAddr(p.Hostname()); err == nil {
		return a.Is4()
	}
	_, ok := hosts[p.Hostname()]
	return ok
}

// PPP method names in uplink.ppp_methods.
const (
	MethodMSCHAPv2 = "mschapv2"
	MethodCHAP     = "chap"
	MethodPAP      = "pap"
)

func badMethods(ms []string) bool {
	for _, m := range ms {
		if m != MethodMSCHAPv2 && m != MethodCHAP && m != MethodPAP {
			return true
		}
	}
	return false
}

// badList reports whether a comma-separated list has an entry parse rejects.
func badList(list string, parse func(string) error) bool {
	if list == "" {
		return false
	}
	for _, p := range strings.Split(list, ",") {
		if parse(p) != nil {
			return true
		}
	}
	return false
}
