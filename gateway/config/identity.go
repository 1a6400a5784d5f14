package config

import (
	"net/netip"
	"time"
)

// Authentication modes for the IKE phase of an identity.
const (
	AuthCert = "cert" // X.509 signature (recommended per site)
	AuthPSK  = "psk"  // pre-shared key (stock clients)
)

// PPP authentication method names.
const (
	MethodPAP      = "pap"      // RFC 1334
	MethodCHAP     = "chap"     // CHAP-MD5, RFC 1994
	MethodMSCHAPv2 = "mschapv2" // RFC 2759
)

// Identity is one site or user allowed to connect.
type Identity struct {
	// Name is the unique key (sessions, metrics, status, policy).
	Name string `yaml:"name"`
	// Auth is "cert" or "psk".
	Auth string `yaml:"auth"`
	// ID is the IKE identity to match: for cert the subject CN or a SAN,
	// for psk the peer's ID payload (optional with the shared PSK).
	ID string `yaml:"id"`
	// PSK is a per-identity pre-shared key (needs ID: Main Mode finds the
	// key by the peer's ID); empty means the shared one. PSKFile reads it
	// from a file instead.
	PSK     string `yaml:"psk"`
	PSKFile string `yaml:"psk_file"`
	// PSKExpires is when PSK must be rotated (YYYY-MM-DD).
	PSKExpires string `yaml:"psk_expires"`
	// PPP holds the L2TP/PPP credentials.
	PPP PPPAuth `yaml:"ppp"`
	// Address is a static VPN address; empty means one from the pool.
	Address string `yaml:"address"`
	// Routes are framed routes: site prefixes routed to this session.
	Routes []string `yaml:"routes"`
	// IPv6Prefix is the site's IPv6 prefix (a /64, or a shorter delegated
	// one down to /48), the IPv6 counterpart of a framed route: with it the
	// gateway offers IPV6CP (RFC 5072) to this identity; without it the
	// site's IPV6CP is Protocol-Rejected and the link is IPv4 only.
	IPv6Prefix string `yaml:"ipv6_prefix"`
	// PushRoutes overrides the global push_routes for this identity.
	PushRoutes []string `yaml:"push_routes"`
	// Policy names an entry of policies; empty means policy.default.
	Policy string `yaml:"policy"`
	// ReplaceSession overrides sessions.replace_on_relogin.
	ReplaceSession *bool `yaml:"replace_session"`

	// Addr, RoutePrefixes and PushPrefixes are parsed values; PushPrefixes
	// already falls back to the global list.
	Addr          netip.Addr     `yaml:"-"`
	RoutePrefixes []netip.Prefix `yaml:"-"`
	// IPv6 is the parsed IPv6Prefix (invalid when unset).
	IPv6         netip.Prefix   `yaml:"-"`
	PushPrefixes []netip.Prefix `yaml:"-"`
	// PSKNotAfter is the parsed PSKExpires.
	PSKNotAfter time.Time `yaml:"-"`
	// Source says where the identity came from: the config file or an
	// imported secrets file.
	Source string `yaml:"-"`
}

// PPPAuth is an identity's PPP credentials. The password is never logged.
type PPPAuth struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// PasswordFile reads Password from a file (owner-only permissions).
	PasswordFile string   `yaml:"password_file"`
	Methods      []string `yaml:"methods"`
}

// AllowsSharedPSK reports whether the identity may log in after a phase 1
// with the shared PSK (or a psk.by_id key, which names no identity): only
// auth psk identities with neither a key nor an IKE ID of their own, i.e.
// stock clients identified by their PPP credentials.
func (id *Identity) AllowsSharedPSK() bool {
	return id.Auth == AuthPSK && id.PSK == "" && id.ID == ""
}

// Allows reports whether method is allowed for this user.
func (p PPPAuth) Allows(method string) bool {
	for _, m := range p.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// Policy decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// PolicyDefaults holds the policy used when an identity names none.
type PolicyDefaults struct {
	// Default is "deny" (least privilege) or "allow".
	Default string `yaml:"default"`
}

// Policy is a named allow-list.
type Policy struct {
	// Default is what happens to traffic no rule allows (default deny).
	Default string `yaml:"default"`
	// Allow lists what the identity may reach.
	Allow []Rule `yaml:"allow"`
}

// Rule allows traffic to a destination prefix, protocol and ports.
type Rule struct {
	// Dst is a destination prefix; empty means any.
	Dst string `yaml:"dst"`
	// Proto is tcp, udp, icmp, any or a protocol number; empty means any.
	Proto string `yaml:"proto"`
	// Ports are destination ports or ranges ("80", "5683-5684"), TCP/UDP
	// only; empty means all.
	Ports []string `yaml:"ports"`

	// DstPrefix, ProtoNum (0 = any) and PortRanges are parsed values.
	DstPrefix  netip.Prefix `yaml:"-"`
	ProtoNum   uint8        `yaml:"-"`
	PortRanges [][2]uint16  `yaml:"-"`
}
