package config

import (
	"net"
	"net/netip"
	"time"
)

// radiusFleet validates the fail-over, spool and dynamic authorization
// keys of the radius section.
func (v *validator) radiusFleet(r *RADIUS) {
	for _, list := range []struct {
		key   string
		addrs []string
	}{{"auth_servers", r.AuthServers}, {"acct_servers", r.AcctServers}} {
		for i, a := range list.addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				v.errf(p("radius", list.key, i), "radius.%s %q: want host:port (e.g. 10.20.0.6:1812)", list.key, a)
			}
		}
	}
	r.DeadTimeD = v.duration(r.DeadTime, 30*time.Second, "radius", "dead_time")
	if r.AcctSpool != "" {
		r.AcctSpool = v.rel(r.AcctSpool)
	}
	if r.AcctSpoolMax < 0 {
		v.errf(p("radius", "acct_spool_max"), "radius.acct_spool_max %d must be positive (0 for the default 100000)", r.AcctSpoolMax)
	}
	if r.DAESecretFile != "" {
		r.DAESecret = v.secretFile(r.DAESecretFile, "radius", "dae_secret_file")
	}
	if r.DAEListen == "" {
		if len(r.DAEClients) > 0 {
			v.errf(p("radius", "dae_clients"), "radius.dae_clients is set but dae_listen is not (e.g. dae_listen: 0.0.0.0:3799)")
		}
		return
	}
	if ap, err := netip.ParseAddrPort(r.DAEListen); err != nil || !ap.Addr().Is4() {
		v.errf(p("radius", "dae_listen"), "radius.dae_listen %q: want IPv4:port, e.g. 0.0.0.0:3799", r.DAEListen)
	}
	if r.DAESecret == "" {
		r.DAESecret = r.Secret
	}
	for i, c := range r.DAEClients {
		pf, err := netip.ParsePrefix(c)
		if err != nil {
			if a, aerr := netip.ParseAddr(c); aerr == nil && a.Is4() {
				pf = netip.PrefixFrom(a, 32)
			} else {
				v.errf(p("radius", "dae_clients", i), "radius.dae_clients %q: want an IPv4 address or prefix", c)
				continue
			}
		}
		r.DAEClientPrefixes = append(r.DAEClientPrefixes, pf.Masked())
	}
}
