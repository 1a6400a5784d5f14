// Validation of the identities list: names, credentials, addresses, policies.

package config

import (
	"net/netip"
)

func (v *validator) identities() {
	c := v.c
	names := map[string]int{}
	users := map[string]string{}
	ids := map[string]string{}
	addrs := map[netip.Addr]string{}
	routes := map[netip.Prefix]string{}
	routes6 := map[netip.Prefix]string{}
	for i := range c.Identities {
		id := &c.Identities[i]
		at := func(k ...any) []any { return append([]any{"identities", i}, k...) }
		if id.Source == "" {
			id.Source = c.File
		}
		if id.Name == "" {
			v.errf(at("name"), "identity %d has no name", i+1)
			continue
		}
		if _, dup := names[id.Name]; dup {
			v.errf(at("name"), "identity %q defined twice", id.Name)
		}
		names[id.Name] = i
		switch id.Auth {
		case "":
			id.Auth = AuthPSK
		case AuthCert, AuthPSK:
		default:
			v.errf(at("auth"), "identity %s: auth %q: want cert or psk", id.Name, id.Auth)
		}
		if id.Auth == AuthCert && id.ID == "" {
			id.ID = id.Name
		}
		if id.PSKFile != "" {
			if id.PSK != "" {
				v.errf(at("psk_file"), "identity %s: set psk or psk_file, not both", id.Name)
			}
			id.PSK = v.secretFile(id.PSKFile, "identities", i, "psk_file")
		}
		if id.PPP.PasswordFile != "" {
			if id.PPP.Password != "" {
				v.errf(at("ppp", "password_file"), "identity %s: set ppp.password or ppp.password_file, not both", id.Name)
			}
			id.PPP.Password = v.secretFile(id.PPP.PasswordFile, "identities", i, "ppp", "password_file")
		}
		if id.PSK != "" && id.Auth == AuthCert {
			v.errf(at("psk"), "identity %s: auth cert with a psk: a certificate identity never logs in with a pre-shared key; remove psk", id.Name)
		}
		if id.PSK != "" && id.ID == "" {
			v.errf(at("psk"), "identity %s: a psk of its own needs id: (the IKE ID the site presents, e.g. id: %s.example.net): Main Mode finds the key by the peer's ID", id.Name, id.Name)
		}
		if id.Auth == AuthPSK && id.PSK == "" && c.PSK.Shared == "" {
			v.errf(at("auth"), "identity %s: auth psk but neither its psk nor psk.shared is set", id.Name)
		}
		id.PSKNotAfter = v.date(id.PSKExpires, "identities", i, "psk_expires")
		if id.ID != "" {
			if other, dup := ids[id.ID]; dup {
				v.errf(at("id"), "identity %s: IKE id %q already used by %s", id.Name, id.ID, other)
			}
			ids[id.ID] = id.Name
		}
		if id.PPP.User == "" {
			id.PPP.User = id.Name
		}
		if other, dup := users[id.PPP.User]; dup {
			v.errf(at("ppp", "user"), "identity %s: PPP user %q already used by %s", id.Name, id.PPP.User, other)
		}
		users[id.PPP.User] = id.Name
		if len(id.PPP.Methods) == 0 {
			id.PPP.Methods = []string{MethodMSCHAPv2, MethodCHAP}
		}
		for j, m := range id.PPP.Methods {
			switch m {
			case MethodPAP, MethodCHAP, MethodMSCHAPv2:
			default:
				v.errf(at("ppp", "methods", j), "identity %s: PPP method %q: want pap, chap or mschapv2", id.Name, m)
			}
		}
		if id.PPP.Password == "" && c.RADIUS == nil {
			v.errf(at("ppp"), "identity %s: no PPP password and no radius section to authenticate it", id.Name)
		}
		if id.Address != "" {
			a, err := netip.ParseAddr(id.Address)
			switch {
			case err != nil || !a.Is4():
				v.errf(at("address"), "identity %s: address %q is not an IPv4 address", id.Name, id.Address)
			case a == c.Pool.GatewayAddr:
				v.errf(at("address"), "identity %s: address %s is the gateway's own", id.Name, a)
			default:
				if other, dup := addrs[a]; dup {
					v.errf(at("address"), "identity %s: address %s already given to %s", id.Name, a, other)
				}
				addrs[a] = id.Name
				id.Addr = a
			}
		}
		id.RoutePrefixes = v.prefixes(id.Routes, "identities", i, "routes")
		for j, r := range id.RoutePrefixes {
			if other, dup := routes[r]; dup {
				v.errf(at("routes", j), "identity %s: framed route %s already routed to %s", id.Name, r, other)
			}
			if c.Pool.PrefixP.IsValid() && r.Overlaps(c.Pool.PrefixP) {
				v.errf(at("routes", j), "identity %s: framed route %s overlaps the pool %s", id.Name, r, c.Pool.PrefixP)
			}
			routes[r] = id.Name
		}
		if id.IPv6Prefix != "" {
			pf, err := netip.ParsePrefix(id.IPv6Prefix)
			switch {
			case err != nil || !pf.Addr().Is6() || pf.Addr().Is4In6():
				v.errf(at("ipv6_prefix"), "identity %s: ipv6_prefix %q is not an IPv6 prefix (like 2001:db8:8::/64)", id.Name, id.IPv6Prefix)
			case pf != pf.Masked():
				v.errf(at("ipv6_prefix"), "identity %s: ipv6_prefix %q has host bits set (did you mean %s?)", id.Name, id.IPv6Prefix, pf.Masked())
			case pf.Bits() < 48 || pf.Bits() > 64:
				v.errf(at("ipv6_prefix"), "identity %s: ipv6_prefix %s: want a /48 to /64 (a site's LAN is a /64)", id.Name, pf)
			default:
				for other, on := range routes6 {
					if other.Overlaps(pf) {
						v.errf(at("ipv6_prefix"), "identity %s: ipv6_prefix %s overlaps %s of %s", id.Name, pf, other, on)
					}
				}
				if pp := c.Pool.IPv6PrefixP; pp.IsValid() && pf.Overlaps(pp) && (pf.Bits() != 64 || !pp.Contains(pf.Addr())) {
					v.errf(at("ipv6_prefix"), "identity %s: ipv6_prefix %s overlaps pool.ipv6_prefix %s (a static /64 inside the pool is reserved; a shorter one must be outside it)", id.Name, pf, pp)
				}
				routes6[pf] = id.Name
				id.IPv6 = pf
			}
		}
		if id.PushRoutes != nil {
			id.PushPrefixes = v.prefixes(id.PushRoutes, "identities", i, "push_routes")
		} else {
			id.PushPrefixes = c.PushPrefixes
		}
		if id.Policy != "" {
			if _, ok := c.Policies[id.Policy]; !ok {
				v.errf(at("policy"), "identity %s: policy %q is not defined under policies", id.Name, id.Policy)
			}
		}
	}
}
