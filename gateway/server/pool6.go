package server

import (
	"fmt"
	"net/netip"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pool"
	"github.com/fleetgate/fleetgate/gateway/route"
)

// IPv6 site prefixes. An identity's IPv6 prefix is, in order: its static
// identities[].ipv6_prefix; the Delegated-IPv6-Prefix or
// Framed-IPv6-Prefix of its RADIUS Access-Accept; a /64 of
// pool.ipv6_prefix. With one the gateway offers IPV6CP, routes the prefix
// to the session, announces it in BGP and (TUN mode) routes it into the
// TUN; the pool's /64 goes back when the session ends.

// newPool6 makes the /64 pool of cfg (nil without pool.ipv6_prefix), with
// static identities' /64s inside it reserved.
func newPool6(cfg *config.Config) (*pool.Pool6, error) {
	if !cfg.Pool.IPv6PrefixP.IsValid() {
		return nil, nil
	}
	p, err := pool.New6(cfg.Pool.IPv6PrefixP, cfg.Pool.IPv6Max)
	if err != nil {
		return nil, err
	}
	reserve6(p, cfg)
	return p, nil
}

func reserve6(p *pool.Pool6, cfg *config.Config) {
	if p == nil {
		return
	}
	for _, id := range cfg.Identities {
		if id.IPv6.IsValid() {
			p.Reserve(id.IPv6)
		}
	}
}

// AssignIPv6 returns identity's IPv6 site prefix (invalid: none, the link
// is IPv4 only): the static one, else fromRADIUS, else a /64 of the pool
// (released with ReleaseIPv6). A full pool is an error: the login goes on
// IPv4 only (the caller logs and counts it).
func (e *Env) AssignIPv6(identity string, fromRADIUS netip.Prefix) (netip.Prefix, error) {
	if id := e.Config().Identity(identity); id != nil && id.IPv6.IsValid() {
		return id.IPv6, nil
	}
	if fromRADIUS.IsValid() {
		return fromRADIUS, nil
	}
	p := e.srv.pool6.Load()
	if p == nil {
		return netip.Prefix{}, nil
	}
	pf, err := p.Allocate(identity)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("server: IPv6 prefix for %s: %w", identity, err)
	}
	return pf, nil
}

// ReleaseIPv6 gives back a prefix from AssignIPv6 (static, RADIUS and
// foreign prefixes are ignored).
func (e *Env) ReleaseIPv6(identity string, pf netip.Prefix) {
	if p := e.srv.pool6.Load(); p != nil && pf.IsValid() {
		p.Release(identity, pf)
	}
}

func sessionIPv6(s Session) netip.Prefix {
	if s6, ok := s.(route.IPv6Session); ok {
		return s6.IPv6Prefix()
	}
	return netip.Prefix{}
}

// reloadPool6 swaps in a new /64 pool when pool.ipv6_prefix or ipv6_max
// changed (the reload then closes every session: Diff counts the pool as
// global), else reserves new static /64s.
func (s *Server) reloadPool6(prev, next *config.Config) error {
	if prev.Pool.IPv6PrefixP != next.Pool.IPv6PrefixP || prev.Pool.IPv6Max != next.Pool.IPv6Max {
		p, err := newPool6(next)
		if err != nil {
			return err
		}
		s.pool6.Store(p)
		return nil
	}
	reserve6(s.pool6.Load(), next)
	return nil
}

// hostRoutes6 are the IPv6 prefixes cfg routes into a TUN host: every
// static ipv6_prefix and the whole pool.ipv6_prefix. RADIUS-given ones
// are added per session (addRoutes).
func hostRoutes6(cfg *config.Config) []netip.Prefix {
	var out []netip.Prefix
	if cfg.Pool.IPv6PrefixP.IsValid() {
		out = append(out, cfg.Pool.IPv6PrefixP)
	}
	for _, id := range cfg.Identities {
		if id.IPv6.IsValid() {
			out = append(out, id.IPv6)
		}
	}
	return out
}

// configured6 reports whether cfg already routes pf into the host.
func configured6(cfg *config.Config, pf netip.Prefix) bool {
	if pp := cfg.Pool.IPv6PrefixP; pp.IsValid() && pp.Contains(pf.Addr()) && pf.Bits() >= pp.Bits() {
		return true
	}
	for _, id := range cfg.Identities {
		if id.IPv6 == pf {
			return true
		}
	}
	return false
}

// reloadRoutes6 makes a TUN host's IPv6 routes follow a reload: prefixes
// next routes and prev did not are added, the reverse removed (unless a
// live session still holds it, e.g. from RADIUS).
func (s *Server) reloadRoutes6(prev, next *config.Config) {
	ra, ok := s.Host().(routeAdder)
	if !ok {
		return
	}
	had, has := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for _, p := range hostRoutes6(prev) {
		had[p] = true
	}
	for _, p := range hostRoutes6(next) {
		has[p] = true
		if !had[p] {
			if err := ra.AddRoute(p); err != nil {
				s.log.Error("reload: cannot add IPv6 route", "prefix", p, "err", err)
			} else {
				s.log.Info("reload: IPv6 route added", "prefix", p)
			}
		}
	}
	live := map[netip.Prefix]bool{}
	for _, sess := range s.table.Sessions() {
		if pf := sessionIPv6(sess); pf.IsValid() {
			live[pf] = true
		}
	}
	for p := range had {
		if has[p] || live[p] {
			continue
		}
		if err := ra.DelRoute(p); err != nil {
			s.log.Error("reload: cannot remove IPv6 route", "prefix", p, "err", err)
		} else {
			s.log.Info("reload: IPv6 route removed", "prefix", p)
		}
	}
}
