// Package config loads the gateway's one YAML configuration file.
//
// Parse decodes the file with gopkg.in/yaml.v3, rejects unknown keys, then
// validates every field and reports all problems at once as Errors, each
// located "file:line: what is wrong". The validated Config carries both the
// text as written (yaml tags) and the parsed values (fields tagged "-").
package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetgate/fleetgate/internal/yamlcheck"
)

// Production defaults for the listening ports (RFC 2409 §4.2 / IANA "isakmp",
// RFC 3947 §4 NAT-T, RFC 2661 §8.1 L2TP).
const (
	DefaultIKEPort  = 500
	DefaultNATTPort = 4500
	DefaultL2TPPort = 1701
	// DefaultMTU caps the PPP MTU offered to clients; the effective MTU of a
	// session is the smaller of this and what its suite leaves room for.
	DefaultMTU = 1400
	// DefaultMetricsListen is where /metrics and /status are served.
	DefaultMetricsListen = "127.0.0.1:9410"
)

// Config is the whole gateway configuration.
type Config struct {
	// Listen holds the UDP endpoints of IKE, NAT-T and L2TP.
	Listen Listen `yaml:"listen"`
	// GatewayID is the IKE identity the gateway presents (an FQDN or an
	// address); empty: the certificate subject with certificates, else the
	// address the client dialled.
	GatewayID string `yaml:"gateway_id"`
	// Proposals are the IKE and ESP proposals accepted, strongSwan syntax.
	Proposals Proposals `yaml:"proposals"`
	// PSK is the shared pre-shared key for stock clients.
	PSK PSK `yaml:"psk"`
	// Identities are the sites and users allowed in.
	Identities []Identity `yaml:"identities"`
	// Pool is the IPCP address pool.
	Pool Pool `yaml:"pool"`
	// DNS servers offered over IPCP (RFC 1877).
	DNS []string `yaml:"dns"`
	// MTU caps the PPP MTU (default 1400).
	MTU int `yaml:"mtu"`
	// PushRoutes are the central prefixes every identity may reach through
	// the VPN unless its own push_routes says otherwise (split tunnelling).
	PushRoutes []string `yaml:"push_routes"`
	// DataPlane selects TUN or userspace mode.
	DataPlane DataPlane `yaml:"dataplane"`
	// Policy holds policy defaults.
	Policy PolicyDefaults `yaml:"policy"`
	// Policies are named allow-lists referenced by identities.
	Policies map[string]Policy `yaml:"policies"`
	// Sessions holds session-table behaviour.
	Sessions Sessions `yaml:"sessions"`
	// Pacing limits how fast new Main Modes are admitted.
	Pacing Pacing `yaml:"pacing"`
	// Limits bound what a peer can make the gateway keep (limits.go).
	Limits Limits `yaml:"limits"`
	// DPD is IKE dead peer detection (RFC 3706).
	DPD DPD `yaml:"dpd"`
	// LCPEcho is the PPP LCP echo keepalive (RFC 1661 §5.8).
	LCPEcho LCPEcho `yaml:"lcp_echo"`
	// Metrics configures the HTTP /metrics and /status listener.
	Metrics Metrics `yaml:"metrics"`
	// Status configures the unix control socket.
	Status Status `yaml:"status"`
	// StatusPage is the fleet status page on the metrics listener.
	StatusPage StatusPage `yaml:"status_page"`
	// RADIUS, when set, authenticates PPP users and receives accounting.
	RADIUS *RADIUS `yaml:"radius"`
	// BGP, when set, announces session prefixes to central routers.
	BGP *BGP `yaml:"bgp"`
	// Import names classic strongSwan/pppd secrets files to merge in.
	Import Import `yaml:"import"`
	// PKI locates the CA, the gateway's certificate and the CRL.
	PKI PKI `yaml:"pki"`
	// Log configures slog output.
	Log Log `yaml:"log"`
	// AuthBackoff slows repeated failed logins per source and identity.
	AuthBackoff AuthBackoff `yaml:"auth_backoff"`
	// Debug holds troubleshooting switches (off by default).
	Debug Debug `yaml:"debug"`

	// File is the path the configuration was loaded from.
	File string `yaml:"-"`
	// DNSAddrs are the parsed DNS servers.
	DNSAddrs []netip.Addr `yaml:"-"`
	// PushPrefixes are the parsed PushRoutes.
	PushPrefixes []netip.Prefix `yaml:"-"`

	root *yaml.Node
}

// Debug holds troubleshooting switches; a reload applies them.
type Debug struct {
	// KeylogDir, when set, is a directory where the gateway writes the
	// IKEv1 and ESP keys of every new SA in Wireshark's
	// ikev1_decryption_table and esp_sa formats (uplink/keylog), so a
	// capture can be decrypted. The files hold secrets (mode 0600).
	KeylogDir string `yaml:"keylog_dir"`
}

// Listen holds the addresses the gateway binds. Ports are overridable so an
// unprivileged run can use e.g. 1500/14500/11701.
type Listen struct {
	Address  string `yaml:"address"`
	IKEPort  int    `yaml:"ike_port"`
	NATTPort int    `yaml:"natt_port"`
	L2TPPort int    `yaml:"l2tp_port"`
	// RawL2TP enables a plain L2TP listener (no IPsec) on L2TPPort, for
	// peers that bring their own IPsec and for testing stock LACs. Off by
	// default: without IPsec, PPP credentials are the only protection.
	RawL2TP bool `yaml:"raw_l2tp"`

	// Addr is the parsed Address.
	Addr netip.Addr `yaml:"-"`
}

// IKEAddr is the IKE (UDP 500) listen address.
func (l Listen) IKEAddr() netip.AddrPort { return netip.AddrPortFrom(l.Addr, uint16(l.IKEPort)) }

// NATTAddr is the NAT-T (UDP 4500) listen address.
func (l Listen) NATTAddr() netip.AddrPort { return netip.AddrPortFrom(l.Addr, uint16(l.NATTPort)) }

// PSK is the shared pre-shared key. Never logged.
type PSK struct {
	Shared     string `yaml:"shared"`
	SharedFile string `yaml:"shared_file"`
	// ByID maps IKE identities (FQDN, address, user@fqdn) to their own
	// PSK, as ipsec.secrets selectors do.
	ByID map[string]string `yaml:"by_id"`
	// SharedExpires is when the shared PSK must be rotated (YYYY-MM-DD);
	// it shows in `gateway pki list` and as a metric.
	SharedExpires string `yaml:"shared_expires"`

	// SharedNotAfter is the parsed SharedExpires (zero when unset).
	SharedNotAfter time.Time `yaml:"-"`
}

// PSKFor returns the pre-shared key for a peer's IKE ID: the matching
// identity's own PSK, then psk.by_id, then the shared PSK.
func (c *Config) PSKFor(ikeID string) (string, bool) {
	if id := c.IdentityByIKEID(ikeID); id != nil && id.PSK != "" {
		return id.PSK, true
	}
	if k, ok := c.PSK.ByID[ikeID]; ok {
		return k, true
	}
	return c.PSK.Shared, c.PSK.Shared != ""
}

// Pool is the IPCP address pool (RFC 1332).
type Pool struct {
	// Prefix is the pool, e.g. 10.10.0.0/24.
	Prefix string `yaml:"prefix"`
	// Gateway is the gateway's own PPP address, excluded from the pool
	// (default: first host of the prefix).
	Gateway string `yaml:"gateway"`
	// Slice is the part of Prefix this gateway hands out dynamically when
	// several gateways share the pool ("10.10.0.64/26" or
	// "10.10.0.64-10.10.0.127"); slices of a fleet must be disjoint
	// (gateway --check-config --fleet FILE checks). Default: the whole
	// prefix.
	Slice string `yaml:"slice"`
	// IPv6Prefix, when set, is cut into /64s: an identity without a static
	// ipv6_prefix (RADIUS users too, unless RADIUS gives one) gets one of
	// them as its site prefix and is offered IPV6CP. The same identity
	// gets the same /64 back while it is free. IPv6Max bounds the /64s
	// handed out at once (default 65536).
	IPv6Prefix string `yaml:"ipv6_prefix"`
	IPv6Max    int    `yaml:"ipv6_max"`
	// IPv6PrefixP is the parsed IPv6Prefix (invalid when unset).
	IPv6PrefixP netip.Prefix `yaml:"-"`

	// SliceLo and SliceHi bound the parsed Slice (invalid when unset).
	SliceLo, SliceHi netip.Addr `yaml:"-"`
	// PrefixP and GatewayAddr are the parsed values.
	PrefixP     netip.Prefix `yaml:"-"`
	GatewayAddr netip.Addr   `yaml:"-"`
}

// DataPlane mode names.
const (
	ModeTUN       = "tun"
	ModeUserspace = "userspace"
)

// DataPlane selects where decapsulated IP packets go.
type DataPlane struct {
	// Mode is "tun" (kernel routes and NATs; needs root) or "userspace".
	Mode string `yaml:"mode"`
	// TUN is the TUN device name (default fg0).
	TUN string `yaml:"tun"`
	// TUNDriver is "vnet" (default: IFF_VNET_HDR with GSO/GRO offloads and
	// batched I/O) or "water" (one packet per system call, for kernels
	// that refuse vnet-hdr offloads); tun mode only.
	TUNDriver string `yaml:"tun_driver"`
	// SessionToSession allows forwarding between two sessions at all; each
	// packet still needs the sender's policy to allow the destination.
	SessionToSession bool `yaml:"session_to_session"`
	// Addresses are the central addresses the userspace stack holds (e.g.
	// 10.20.0.10/32 for an in-process broker); userspace mode only.
	Addresses []string `yaml:"addresses"`

	// AddressPrefixes are the parsed Addresses.
	AddressPrefixes []netip.Prefix `yaml:"-"`
}

// Sessions configures the session table.
type Sessions struct {
	// ReplaceOnRelogin: an identity logging in again replaces its old
	// session (default true). When false the new login is refused.
	ReplaceOnRelogin *bool `yaml:"replace_on_relogin"`
}

// Replace reports the effective ReplaceOnRelogin.
func (s Sessions) Replace() bool { return s.ReplaceOnRelogin == nil || *s.ReplaceOnRelogin }

// Pacing is the Main Mode admission token bucket.
type Pacing struct {
	GlobalRate     float64 `yaml:"global_rate"`
	GlobalBurst    int     `yaml:"global_burst"`
	PerSourceRate  float64 `yaml:"per_source_rate"`
	PerSourceBurst int     `yaml:"per_source_burst"`
}

// Defaults of the liveness checks, as strongSwan's dpddelay/dpdtimeout and
// pppd's lcp-echo-interval/lcp-echo-failure usually run them.
const (
	DefaultDPDInterval     = 30 * time.Second
	DefaultDPDTimeout      = 150 * time.Second
	DefaultLCPEchoInterval = 20 * time.Second
	DefaultLCPEchoFailures = 3
	// maxLiveness bounds every liveness duration: longer ones are typos.
	maxLiveness = 24 * time.Hour
	// maxEchoFailures bounds lcp_echo.failures.
	maxEchoFailures = 100
)

// DPD configures IKE dead peer detection (RFC 3706): an R-U-THERE after
// Interval without traffic from the peer, the peer declared dead (its SAs
// and sessions closed) after Timeout without an answer.
type DPD struct {
	// Interval is a duration ("30s"), or "off" to answer DPD without
	// ever asking.
	Interval string `yaml:"interval"`
	Timeout  string `yaml:"timeout"`

	// IntervalD and TimeoutD are the parsed values; IntervalD < 0 when off.
	IntervalD time.Duration `yaml:"-"`
	TimeoutD  time.Duration `yaml:"-"`
}

// LCPEcho configures the PPP keepalive: an LCP Echo-Request every
// Interval, the link declared dead after Failures unanswered in a row.
type LCPEcho struct {
	Interval string `yaml:"interval"`
	Failures int    `yaml:"failures"`

	// IntervalD is the parsed Interval.
	IntervalD time.Duration `yaml:"-"`
}

// Metrics configures the HTTP listener for /metrics and /status.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Status configures the unix control socket used by `gateway status`.
type Status struct {
	Socket string `yaml:"socket"`
}

// RADIUS configures the RADIUS client (RFC 2865/2866).
type RADIUS struct {
	Auth          string `yaml:"auth"`
	Acct          string `yaml:"acct"`
	Secret        string `yaml:"secret"`
	SecretFile    string `yaml:"secret_file"`
	NASIdentifier string `yaml:"nas_identifier"`
	// Phase1IDAttribute names the Access-Accept attribute that binds a
	// RADIUS user to the phase 1 identity that may log in as it
	// ("Filter-Id"); users without it may only follow a shared-PSK phase 1.
	Phase1IDAttribute string `yaml:"phase1_id_attribute"`
	Timeout           string `yaml:"timeout"`
	InterimInterval   string `yaml:"interim_interval"`
	// AuthServers and AcctServers are further servers (host:port), tried
	// in this order after auth and acct: fail-over as in a FreeRADIUS
	// home_server_pool. All share the secret.
	AuthServers []string `yaml:"auth_servers"`
	AcctServers []string `yaml:"acct_servers"`
	// DeadTime is how long a server that did not answer is skipped
	// (default 30s).
	DeadTime string `yaml:"dead_time"`
	// AcctSpool is a file (bbolt) that keeps accounting records until a
	// server acknowledges them, across restarts; empty keeps them in
	// memory only. AcctSpoolMax bounds it (default 100000 records).
	AcctSpool    string `yaml:"acct_spool"`
	AcctSpoolMax int    `yaml:"acct_spool_max"`
	// DAEListen (host:port, port 3799) turns on the RFC 5176
	// Disconnect-Request / CoA-Request listener; DAEClients are the
	// sources allowed (prefixes; empty: any); DAESecret or
	// DAESecretFile default to the secret.
	DAEListen     string   `yaml:"dae_listen"`
	DAEClients    []string `yaml:"dae_clients"`
	DAESecret     string   `yaml:"dae_secret"`
	DAESecretFile string   `yaml:"dae_secret_file"`

	// TimeoutD and InterimD are the parsed durations.
	TimeoutD time.Duration `yaml:"-"`
	InterimD time.Duration `yaml:"-"`
	// DeadTimeD is the parsed DeadTime.
	DeadTimeD time.Duration `yaml:"-"`
	// DAEClientPrefixes are the parsed DAEClients.
	DAEClientPrefixes []netip.Prefix `yaml:"-"`
}

// AcctList is every accounting server in fail-over order.
func (r *RADIUS) AcctList() []string {
	if r.Acct == "" {
		return r.AcctServers
	}
	return append([]string{r.Acct}, r.AcctServers...)
}

// AuthBackoff: after Free failed logins (IKE or PPP) from one source
// address, or 4 x Free for one identity from sources it never logged in from,
// each further attempt must wait Delay, doubling per failure up to
// MaxDelay; failures are forgotten after Forget without one. An identity
// is never slowed from an address it logged in from.
type AuthBackoff struct {
	Free     int    `yaml:"free_failures"`
	Delay    string `yaml:"delay"`
	MaxDelay string `yaml:"max_delay"`
	Forget   string `yaml:"forget"`

	// DelayD, MaxDelayD and ForgetD are the parsed durations.
	DelayD, MaxDelayD, ForgetD time.Duration `yaml:"-"`
}

// Import names classic secrets files merged into the identities.
type Import struct {
	IPsecSecrets string `yaml:"ipsec_secrets"`
	CHAPSecrets  string `yaml:"chap_secrets"`
}

// PKI locates certificate material. Relative names are under Dir.
type PKI struct {
	Dir  string `yaml:"dir"`
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CRL  string `yaml:"crl"`
	// CRLURL is the fleet's one revocation source: a CRL distribution
	// point (http or https, PEM or DER, signed by the CA) every gateway
	// fetches every CRLRefresh (default 5m); a newer CRL replaces the file
	// CRL and ends the live sessions of revoked certificates.
	CRLURL     string `yaml:"crl_url"`
	CRLRefresh string `yaml:"crl_refresh"`
	// CRLFail is the policy when no valid CRL is at hand (the source
	// unreachable and the last CRL past its nextUpdate): "closed"
	// (default) refuses certificate logins until a fresh CRL arrives,
	// "open" keeps accepting them with the stale CRL. Both are logged.
	CRLFail string `yaml:"crl_fail"`
	// OCSPURL is the operator's OCSP responder (e.g. `gateway pki
	// serve-crl`'s /ocsp), asked about every site certificate at login
	// (answers cached OCSPRefresh, default 5m) and about every live
	// session's certificate every OCSPRefresh: a revoked one ends.
	// OCSPFail (closed, the default, or open) decides a login when the
	// responder is unreachable and no cached answer is still valid.
	// OCSPCacheMax bounds the cache (default 10000 certificates).
	OCSPURL      string `yaml:"ocsp_url"`
	OCSPRefresh  string `yaml:"ocsp_refresh"`
	OCSPFail     string `yaml:"ocsp_fail"`
	OCSPCacheMax int    `yaml:"ocsp_cache_max"`

	// CRLRefreshD is the parsed CRLRefresh.
	CRLRefreshD time.Duration `yaml:"-"`
	// OCSPRefreshD is the parsed OCSPRefresh.
	OCSPRefreshD time.Duration `yaml:"-"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Load reads and validates the configuration file at path. Unlike Parse
// it refuses secrets that group or others may read: the files named by
// *_file keys and imports, and the configuration file itself when it
// holds a secret inline.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(path, b, true)
	if err != nil {
		return nil, err
	}
	if c.hasInlineSecrets() {
		if err := CheckSecretFile(path); err != nil {
			return nil, Errors{{File: path, Msg: err.Error() + "; or move the secrets to *_file files"}}
		}
	}
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse decodes and validates a configuration; file names it in errors.
// Secret files it names are read without the permission check of Load.
func Parse(file string, b []byte) (*Config, error) { return parse(file, b, false) }

func parse(file string, b []byte, perms bool) (*Config, error) { return parseKeep(file, b, perms, nil) }

// parseKeep is parse; when validation (not decoding) fails it also stores
// the decoded configuration in *keep, so Check can look at its files and
// report those problems in the same run.
func parseKeep(file string, b []byte, perms bool, keep **Config) (*Config, error) {
	if file == "" {
		file = "<input>"
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, yamlErrors(file, err)
	}
	// Unknown keys and wrong types, every one, by key path and line with
	// the closest valid key (yaml.v3's own messages name Go types).
	if ps := yamlcheck.Check(&root, reflect.TypeFor[Config]()); len(ps) > 0 {
		es := make(Errors, 0, len(ps))
		for _, p := range ps {
			es = append(es, &Error{File: file, Line: p.Line, Msg: p.Msg})
		}
		return nil, es
	}
	c := &Config{File: file, root: &root}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if err.Error() == "EOF" {
			return nil, Errors{{File: file, Msg: "empty configuration"}}
		}
		return nil, yamlErrors(file, err)
	}
	c.File = file
	v := &validator{c: c, perms: perms}
	v.run()
	if len(v.errs) > 0 {
		if keep != nil {
			*keep = c
		}
		return nil, v.errs
	}
	return c, nil
}

func yamlErrors(file string, err error) error {
	var msgs []string
	if te, ok := err.(*yaml.TypeError); ok {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var es Errors
	for _, m := range msgs {
		e := &Error{File: file, Msg: m}
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Msg = sm[2]
		}
		es = append(es, e)
	}
	return es
}

// line finds the line of the node at path (mapping keys as strings,
// sequence indexes as ints), or of its deepest existing ancestor.
func (c *Config) line(path ...any) int {
	if c.root == nil {
		return 0
	}
	n := c.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}

// Identity returns the identity with the given name, or nil.
func (c *Config) Identity(name string) *Identity {
	for i := range c.Identities {
		if c.Identities[i].Name == name {
			return &c.Identities[i]
		}
	}
	return nil
}

// IdentityByPPPUser returns the identity whose PPP user name is user.
func (c *Config) IdentityByPPPUser(user string) *Identity {
	for i := range c.Identities {
		if c.Identities[i].PPP.User == user {
			return &c.Identities[i]
		}
	}
	return nil
}

// IdentityByIKEID returns the identity whose IKE ID is id.
func (c *Config) IdentityByIKEID(id string) *Identity {
	for i := range c.Identities {
		if c.Identities[i].ID == id {
			return &c.Identities[i]
		}
	}
	return nil
}
