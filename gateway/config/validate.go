package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
)

type validator struct {
	c    *Config
	errs Errors
	// perms: refuse secret files that group or others may read (Load).
	perms bool
}

func (v *validator) errf(path []any, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.c.File, Line: v.c.line(path...), Msg: fmt.Sprintf(format, args...)})
}

func p(path ...any) []any { return path }

func (v *validator) run() {
	c := v.c
	v.listen()
	v.proposals()
	v.liveness()
	if c.PSK.SharedFile != "" {
		if c.PSK.Shared != "" {
			v.errf(p("psk", "shared_file"), "psk: set shared or shared_file, not both")
		}
		c.PSK.Shared = v.secretFile(c.PSK.SharedFile, "psk", "shared_file")
	}
	v.gatewayID()
	c.Debug.KeylogDir = v.rel(c.Debug.KeylogDir)
	v.backoff()
	v.imports()
	c.PSK.SharedNotAfter = v.date(c.PSK.SharedExpires, "psk", "shared_expires")
	v.pool()
	v.poolSlice()
	for i, d := range c.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			v.errf(p("dns", i), "dns %q is not an IPv4 address", d)
			continue
		}
		c.DNSAddrs = append(c.DNSAddrs, a)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	} else if c.MTU < 576 || c.MTU > 1500 {
		v.errf(p("mtu"), "mtu %d out of range 576..1500", c.MTU)
	}
	c.PushPrefixes = v.prefixes(c.PushRoutes, "push_routes")
	switch c.DataPlane.Mode {
	case "":
		c.DataPlane.Mode = ModeTUN
	case ModeTUN, ModeUserspace:
	default:
		v.errf(p("dataplane", "mode"), "dataplane.mode %q: want tun or userspace", c.DataPlane.Mode)
	}
	for i, a := range c.DataPlane.Addresses {
		pf, err := netip.ParsePrefix(a)
		if err != nil || pf.Addr().Is4In6() || pf.Addr().Zone() != "" {
			v.errf(p("dataplane", "addresses", i), "dataplane.addresses %q: want an IPv4 or IPv6 address with prefix length, e.g. 10.20.0.10/32 or 2001:db8:200::10/128", a)
			continue
		}
		c.DataPlane.AddressPrefixes = append(c.DataPlane.AddressPrefixes, pf)
	}
	if len(c.DataPlane.Addresses) > 0 && c.DataPlane.Mode != ModeUserspace {
		v.errf(p("dataplane", "addresses"), "dataplane.addresses is only used in userspace mode")
	}
	if c.DataPlane.TUN == "" {
		c.DataPlane.TUN = "fg0"
	}
	switch c.DataPlane.TUNDriver {
	case "":
		c.DataPlane.TUNDriver = "vnet"
	case "vnet", "water":
	default:
		v.errf(p("dataplane", "tun_driver"), "dataplane.tun_driver %q: want vnet (default, batched with offloads) or water (one packet per system call, for old kernels)", c.DataPlane.TUNDriver)
	}
	switch c.Policy.Default {
	case "":
		c.Policy.Default = Deny
	case Allow, Deny:
	default:
		v.errf(p("policy", "default"), "policy.default %q: want allow or deny", c.Policy.Default)
	}
	v.policies()
	v.identities()
	if c.Pacing.GlobalRate == 0 {
		c.Pacing.GlobalRate = 200
	}
	if c.Pacing.GlobalBurst == 0 {
		c.Pacing.GlobalBurst = 400
	}
	if c.Pacing.PerSourceRate == 0 {
		c.Pacing.PerSourceRate = 1
	}
	if c.Pacing.PerSourceBurst == 0 {
		c.Pacing.PerSourceBurst = 5
	}
	if c.Pacing.GlobalRate < 0 || c.Pacing.PerSourceRate < 0 || c.Pacing.GlobalBurst < 0 || c.Pacing.PerSourceBurst < 0 {
		v.errf(p("pacing"), "pacing rates and bursts must be positive")
	}
	if c.Metrics.Listen == "" {
		c.Metrics.Listen = DefaultMetricsListen
	} else if c.Metrics.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			v.errf(p("metrics", "listen"), "metrics.listen %q: want host:port or off", c.Metrics.Listen)
		}
	}
	v.statusPage()
	v.radius()
	v.bgp()
	v.limits()
	if c.PKI.Dir == "" {
		c.PKI.Dir = "/var/lib/fleetgate/pki"
	}
	c.PKI.Dir = v.rel(c.PKI.Dir)
	v.crlSource()
	v.ocspSource()
	for _, f := range []*string{&c.PKI.CA, &c.PKI.Cert, &c.PKI.Key, &c.PKI.CRL} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(c.PKI.Dir, *f)
		}
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		v.errf(p("log", "level"), "log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "json"
	case "json", "text":
	default:
		v.errf(p("log", "format"), "log.format %q: want json or text", c.Log.Format)
	}
}

// rel resolves a path relative to the configuration file's directory.
func (v *validator) rel(path string) string {
	if path == "" || filepath.IsAbs(path) || v.c.File == "<input>" {
		return path
	}
	return filepath.Join(filepath.Dir(v.c.File), path)
}

func (v *validator) listen() {
	l := &v.c.Listen
	if l.Address == "" {
		l.Address = "0.0.0.0"
	}
	a, err := netip.ParseAddr(l.Address)
	if err != nil {
		v.errf(p("listen", "address"), "listen.address %q is not an IP address", l.Address)
	}
	l.Addr = a
	for _, pp := range []struct {
		key  string
		port *int
		def  int
	}{{"ike_port", &l.IKEPort, DefaultIKEPort}, {"natt_port", &l.NATTPort, DefaultNATTPort}, {"l2tp_port", &l.L2TPPort, DefaultL2TPPort}} {
		if *pp.port == 0 {
			*pp.port = pp.def
		} else if *pp.port < 1 || *pp.port > 65535 {
			v.errf(p("listen", pp.key), "listen.%s %d out of range 1..65535", pp.key, *pp.port)
		}
	}
	if l.IKEPort == l.NATTPort {
		v.errf(p("listen", "natt_port"), "listen.natt_port equals ike_port %d", l.IKEPort)
	}
}

func (v *validator) proposals() {
	pr := &v.c.Proposals
	if len(pr.IKE) == 0 {
		pr.IKE = slices.Clone(DefaultIKEProposals)
		if pr.AllowLegacy {
			pr.IKE = append(pr.IKE, legacyIKEProposals...)
		}
	}
	if len(pr.ESP) == 0 {
		pr.ESP = slices.Clone(DefaultESPProposals)
		if pr.AllowLegacy {
			pr.ESP = append(pr.ESP, legacyESPProposals...)
		}
	}
	for i, s := range pr.IKE {
		ip, err := ParseIKEProposal(s)
		if err != nil {
			v.errf(p("proposals", "ike", i), "%v", err)
			continue
		}
		// What the IKE engine runs (e.g. no modp1536 or ecp521).
		kp, err := ike.ParseIKEProposal(s)
		if err != nil || !kp.Group.Supported() {
			v.errf(p("proposals", "ike", i), "proposals.ike: %q: not implemented by the IKE engine (groups: modp2048, modp3072, modp4096, ecp256, ecp384, curve25519)", s)
			continue
		}
		if kp.Legacy() && !pr.AllowLegacy {
			v.errf(p("proposals", "ike", i), "proposals.ike: %q is %s", s, legacyHint)
			continue
		}
		pr.IKEParsed = append(pr.IKEParsed, ip)
	}
	for i, s := range pr.ESP {
		ep, err := ParseESPProposal(s)
		if err != nil {
			v.errf(p("proposals", "esp", i), "%v", err)
			continue
		}
		kp, err := ike.ParseESPProposal(s)
		if err != nil || (kp.PFS != ike.GroupNone && !kp.PFS.Supported()) {
			v.errf(p("proposals", "esp", i), "proposals.esp: %q: not implemented by the IKE engine (PFS groups: modp2048, modp3072, modp4096, ecp256, ecp384, curve25519)", s)
			continue
		}
		if kp.Legacy() && !pr.AllowLegacy {
			v.errf(p("proposals", "esp", i), "proposals.esp: %q is %s", s, legacyHint)
			continue
		}
		pr.ESPParsed = append(pr.ESPParsed, ep)
	}
}

func (v *validator) pool() {
	pl := &v.c.Pool
	if pl.Prefix == "" {
		pl.Prefix = "10.10.0.0/24"
	}
	pf, err := netip.ParsePrefix(pl.Prefix)
	if err != nil || !pf.Addr().Is4() || pf.Bits() > 30 {
		v.errf(p("pool", "prefix"), "pool.prefix %q: want an IPv4 prefix of /30 or larger", pl.Prefix)
		return
	}
	pl.PrefixP = pf.Masked()
	v.pool6()
	if pl.Gateway == "" {
		pl.GatewayAddr = pl.PrefixP.Addr().Next()
		return
	}
	g, err := netip.ParseAddr(pl.Gateway)
	if err != nil || !pl.PrefixP.Contains(g) {
		v.errf(p("pool", "gateway"), "pool.gateway %q is not an address inside %s", pl.Gateway, pl.PrefixP)
		return
	}
	pl.GatewayAddr = g
}

// pool6 checks pool.ipv6_prefix (the /64s handed to identities without a
// static ipv6_prefix) and pool.ipv6_max.
func (v *validator) pool6() {
	pl := &v.c.Pool
	if pl.IPv6Prefix == "" {
		if pl.IPv6Max != 0 {
			v.errf(p("pool", "ipv6_max"), "pool.ipv6_max is set but pool.ipv6_prefix is not (add pool.ipv6_prefix, e.g. 2001:db8:100::/48, or remove ipv6_max)")
		}
		return
	}
	pf, err := netip.ParsePrefix(pl.IPv6Prefix)
	switch {
	case err != nil || !pf.Addr().Is6() || pf.Addr().Is4In6():
		v.errf(p("pool", "ipv6_prefix"), "pool.ipv6_prefix %q is not an IPv6 prefix (like 2001:db8:100::/48)", pl.IPv6Prefix)
		return
	case pf != pf.Masked():
		v.errf(p("pool", "ipv6_prefix"), "pool.ipv6_prefix %q has host bits set (did you mean %s?)", pl.IPv6Prefix, pf.Masked())
		return
	case pf.Bits() < 32 || pf.Bits() > 63:
		v.errf(p("pool", "ipv6_prefix"), "pool.ipv6_prefix %s: want a /32 to /63 (it is cut into one /64 per site; a /48 holds 65,535)", pf)
		return
	}
	if pl.IPv6Max < 0 || pl.IPv6Max > 1<<20 {
		v.errf(p("pool", "ipv6_max"), "pool.ipv6_max %d out of range 1..1048576 (default 65536; remove the key to use it)", pl.IPv6Max)
		return
	}
	pl.IPv6PrefixP = pf
}

func (v *validator) prefixes(list []string, path ...any) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil && a.Is4() {
				pf = netip.PrefixFrom(a, 32)
			} else {
				v.errf(append(append([]any{}, path...), i), "%q is not an IPv4 prefix (like 10.10.8.0/24)", s)
				continue
			}
		}
		if !pf.Addr().Is4() {
			v.errf(append(append([]any{}, path...), i), "%q: only IPv4 prefixes are supported", s)
			continue
		}
		if pf != pf.Masked() {
			v.errf(append(append([]any{}, path...), i), "%q has host bits set (did you mean %s?)", s, pf.Masked())
			continue
		}
		out = append(out, pf)
	}
	return out
}

// dstPrefix parses a policy rule's dst: an IPv4 or IPv6 prefix, or a
// single address (/32 or /128). A prefix with host bits set is returned
// with ok false; a v4-mapped IPv6 prefix is refused (invalid, ok false).
func dstPrefix(s string) (netip.Prefix, bool) {
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, false
		}
		pf = netip.PrefixFrom(a, a.BitLen())
	}
	if pf.Addr().Is4In6() {
		return netip.Prefix{}, false
	}
	return pf, pf == pf.Masked()
}

func (v *validator) policies() {
	for name, pol := range v.c.Policies {
		switch pol.Default {
		case "":
			pol.Default = Deny
		case Allow, Deny:
		default:
			v.errf(p("policies", name, "default"), "policy %s: default %q: want allow or deny", name, pol.Default)
		}
		for i := range pol.Allow {
			r := &pol.Allow[i]
			at := func(k string) []any { return p("policies", name, "allow", i, k) }
			if r.Dst != "" {
				if pf, ok := dstPrefix(r.Dst); ok {
					r.DstPrefix = pf
				} else if pf.IsValid() {
					v.errf(at("dst"), "policy %s: dst %q has host bits set (did you mean %s?)", name, r.Dst, pf.Masked())
				} else {
					v.errf(at("dst"), "policy %s: dst %q is not an IPv4 or IPv6 prefix (like 10.20.0.0/16 or 2001:db8:200::/48)", name, r.Dst)
				}
			}
			switch strings.ToLower(r.Proto) {
			case "", "any":
			case "icmp":
				r.ProtoNum = 1
			case "tcp":
				r.ProtoNum = 6
			case "udp":
				r.ProtoNum = 17
			default:
				n, err := strconv.ParseUint(r.Proto, 10, 8)
				if err != nil || n == 0 {
					v.errf(at("proto"), "policy %s: proto %q: want tcp, udp, icmp, any or a number 1..255", name, r.Proto)
				}
				r.ProtoNum = uint8(n)
			}
			if len(r.Ports) > 0 && r.ProtoNum != 6 && r.ProtoNum != 17 {
				v.errf(at("ports"), "policy %s: ports need proto tcp or udp", name)
			}
			for j, ps := range r.Ports {
				lo, hi, ok := parsePortRange(ps)
				if !ok {
					v.errf(p("policies", name, "allow", i, "ports", j), "policy %s: port %q: want N or N-M within 1..65535", name, ps)
					continue
				}
				r.PortRanges = append(r.PortRanges, [2]uint16{lo, hi})
			}
		}
		v.c.Policies[name] = pol
	}
}

func parsePortRange(s string) (lo, hi uint16, ok bool) {
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	l, err := strconv.ParseUint(a, 10, 16)
	if err != nil || l == 0 {
		return 0, 0, false
	}
	h := l
	if found {
		h, err = strconv.ParseUint(b, 10, 16)
		if err != nil || h < l {
			return 0, 0, false
		}
	}
	return uint16(l), uint16(h), true
}

// gatewayID validates gateway_id: an FQDN or an IP address.
func (v *validator) gatewayID() {
	g := v.c.GatewayID
	if g == "" {
		return
	}
	if _, err := netip.ParseAddr(g); err == nil {
		return
	}
	if strings.ContainsAny(g, " \t/=,") || !strings.Contains(g, ".") {
		v.errf(p("gateway_id"), "gateway_id %q: want an FQDN like vpn.example.net or an IP address", g)
	}
}

// Defaults of auth_backoff.
const (
	DefaultBackoffFree     = 10
	DefaultBackoffDelay    = 30 * time.Second
	DefaultBackoffMaxDelay = 10 * time.Minute
	DefaultBackoffForget   = time.Hour
)

func (v *validator) backoff() {
	b := &v.c.AuthBackoff
	switch {
	case b.Free == 0:
		b.Free = DefaultBackoffFree
	case b.Free < 0 || b.Free > 1000:
		v.errf(p("auth_backoff", "free_failures"), "auth_backoff.free_failures %d out of range 1..1000", b.Free)
	}
	b.DelayD = v.boundedDuration(b.Delay, DefaultBackoffDelay, "a duration like 30s", "auth_backoff", "delay")
	b.MaxDelayD = v.boundedDuration(b.MaxDelay, DefaultBackoffMaxDelay, "a duration like 10m", "auth_backoff", "max_delay")
	b.ForgetD = v.boundedDuration(b.Forget, DefaultBackoffForget, "a duration like 1h", "auth_backoff", "forget")
	if b.MaxDelayD < b.DelayD {
		v.errf(p("auth_backoff", "max_delay"), "auth_backoff.max_delay %v is shorter than delay %v", b.MaxDelayD, b.DelayD)
	}
}

// liveness validates dpd and lcp_echo.
func (v *validator) liveness() {
	d := &v.c.DPD
	if d.Interval == "off" {
		d.IntervalD = -1
	} else {
		d.IntervalD = v.boundedDuration(d.Interval, DefaultDPDInterval, `a duration like 30s, or "off"`, "dpd", "interval")
	}
	d.TimeoutD = v.boundedDuration(d.Timeout, DefaultDPDTimeout, "a duration like 150s", "dpd", "timeout")
	if d.IntervalD > 0 && d.TimeoutD < d.IntervalD {
		v.errf(p("dpd", "timeout"), "dpd.timeout %v is shorter than dpd.interval %v: the peer would be dead before it is asked", d.TimeoutD, d.IntervalD)
	}
	e := &v.c.LCPEcho
	e.IntervalD = v.boundedDuration(e.Interval, DefaultLCPEchoInterval, "a duration like 20s", "lcp_echo", "interval")
	switch {
	case e.Failures == 0:
		e.Failures = DefaultLCPEchoFailures
	case e.Failures < 0 || e.Failures > maxEchoFailures:
		v.errf(p("lcp_echo", "failures"), "lcp_echo.failures %d out of range 1..%d", e.Failures, maxEchoFailures)
		e.Failures = DefaultLCPEchoFailures
	}
}

// boundedDuration parses a liveness duration: positive, at most maxLiveness.
func (v *validator) boundedDuration(s string, def time.Duration, want string, path ...any) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxLiveness {
		v.errf(path, "%s %q: want %s (at most %v)", strings.Join(strPath(path), "."), s, want, maxLiveness)
		return def
	}
	return d
}

func (v *validator) duration(s string, def time.Duration, path ...any) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		v.errf(path, "%s %q: want a duration like 3s or 5m", strings.Join(strPath(path), "."), s)
		return def
	}
	return d
}

func strPath(path []any) []string {
	out := make([]string, len(path))
	for i, x := range path {
		out[i] = fmt.Sprint(x)
	}
	return out
}
