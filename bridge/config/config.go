// Package config loads the edge bridge's YAML configuration
// (configs/bridge.yaml is the annotated reference).
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"gopkg.in/yaml.v3"
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
	// Listen is the HTTP address for /metrics and /status.
	Listen string `yaml:"http_listen"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
}

// Downlink configures the DTLS/CoAP side.
type Downlink struct {
	CoAPListen  string        `yaml:"coap_listen"`
	AdvertHost  string        `yaml:"advertised_host"`
	Rate        float64       `yaml:"rate"`
	Burst       int           `yaml:"burst"`
	QueueLen    int           `yaml:"queue_len"`
	QueueTTL    time.Duration `yaml:"queue_ttl"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
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
	// PSK, or Cert/Key (PEM files) with CA (PEM file) for signatures.
	PSK  string `yaml:"psk"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
	// LocalID is our IKE identity as an FQDN (sites behind one NAT each
	// need their own); empty: our address.
	LocalID     string `yaml:"local_id"`
	PPPUser     string `yaml:"ppp_user"`
	PPPPassword string `yaml:"ppp_password"`
	MTU         int    `yaml:"mtu"`
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
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates YAML (unknown keys are errors).
func Parse(b []byte) (*Config, error) {
	c := &Config{
		StateDir: "/var/lib/fleetgate-bridge",
		Downlink: Downlink{CoAPListen: "0.0.0.0:5684"},
		Uplink:   Uplink{Mode: "none"},
		Listen:   "127.0.0.1:9184",
		LogLevel: "info",
	}
	dec := yaml.NewDecoder(bytesReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !c.Prefix.IsValid() || !c.Prefix.Addr().Is4() || c.Prefix.Bits() > 30 {
		return nil, fmt.Errorf("%w: prefix must be an IPv4 prefix of /30 or larger", ErrInvalid)
	}
	if c.BridgeAddr.IsValid() && !c.Prefix.Contains(c.BridgeAddr) {
		return nil, fmt.Errorf("%w: bridge_address outside prefix", ErrInvalid)
	}
	if c.Uplink.Mode != "none" && c.Uplink.Mode != "l2tp-ipsec" {
		return nil, fmt.Errorf("%w: uplink.mode must be none or l2tp-ipsec", ErrInvalid)
	}
	if c.Uplink.Mode == "l2tp-ipsec" {
		u := c.Uplink
		switch {
		case len(u.Gateways) == 0:
			return nil, fmt.Errorf("%w: uplink.gateways is empty", ErrInvalid)
		case u.PSK == "" && (u.Cert == "" || u.Key == ""):
			return nil, fmt.Errorf("%w: uplink needs psk or cert and key", ErrInvalid)
		case u.PSK != "" && u.Cert != "":
			return nil, fmt.Errorf("%w: uplink: psk and cert are exclusive", ErrInvalid)
		case u.PPPUser == "":
			return nil, fmt.Errorf("%w: uplink.ppp_user is empty", ErrInvalid)
		case u.MinBackoff < 0 || u.MaxBackoff < 0 || (u.MaxBackoff > 0 && u.MaxBackoff < u.MinBackoff):
			return nil, fmt.Errorf("%w: uplink: bad min_backoff/max_backoff", ErrInvalid)
		}
	}
	if c.Site == "" {
		c.Site = "site"
	}
	return c, nil
}
