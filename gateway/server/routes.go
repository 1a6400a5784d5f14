// Run-time routes for a session's framed prefixes on hosts that take them (TUN).

package server

import (
	"net/netip"
)

// routeAdder is implemented by hosts that take routes at run time (TUN).
type routeAdder interface {
	AddRoute(netip.Prefix) error
	DelRoute(netip.Prefix) error
}

// addRoutes installs a session's framed routes that the configuration did
// not already route (e.g. from RADIUS) into a TUN host.
func (s *Server) addRoutes(sess Session) {
	ra, ok := s.Host().(routeAdder)
	if !ok {
		return
	}
	cfg := s.cfg.Load()
	for _, p := range sess.Routes() {
		if cfg.Pool.PrefixP.Contains(p.Addr()) && p.Bits() >= cfg.Pool.PrefixP.Bits() {
			continue
		}
		if err := ra.AddRoute(p); err != nil {
			s.log.Error("cannot add route", "prefix", p, "err", err)
		}
	}
	if !cfg.Pool.PrefixP.Contains(sess.Addr()) {
		_ = ra.AddRoute(netip.PrefixFrom(sess.Addr(), 32))
	}
	if pf := sessionIPv6(sess); pf.IsValid() && !configured6(cfg, pf) { // e.g. RADIUS Delegated-IPv6-Prefix
		if err := ra.AddRoute(pf); err != nil {
			s.log.Error("cannot add route", "prefix", pf, "err", err)
		}
	}
}

func (s *Server) delRoutes(sess Session) {
	ra, ok := s.Host().(routeAdder)
	if !ok {
		return
	}
	cfg := s.cfg.Load()
	configured := map[netip.Prefix]bool{}
	for _, id := range cfg.Identities {
		for _, p := range id.RoutePrefixes {
			configured[p] = true
		}
	}
	for _, p := range sess.Routes() {
		if !configured[p] && !(cfg.Pool.PrefixP.Contains(p.Addr()) && p.Bits() >= cfg.Pool.PrefixP.Bits()) {
			_ = ra.DelRoute(p)
		}
	}
	// An IPv6 prefix the configuration does not route (RADIUS, or an
	// identity a reload removed), unless another session now holds it.
	if pf := sessionIPv6(sess); pf.IsValid() && !configured6(cfg, pf) && s.table.Lookup(pf.Addr()) == nil {
		_ = ra.DelRoute(pf)
	}
}
