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
	Mode        string   `yaml:"mode"`
	Gateways    []string `yaml:"gateways"`
	PSK         string   `yaml:"psk"`
	Cert        string   `yaml:"cert"`
	Key         string   `yaml:"key"`
	PPPUser     string   `yaml:"ppp_user"`
	PPPPassword string   `yaml:"ppp_password"`
	MTU         int      `yaml:"mtu"`
}

// Load reads and validates a config file, filling defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b)
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
	if c.Site == "" {
		c.Site = "site"
	}
	return c, nil
}
