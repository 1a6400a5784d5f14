package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// An endpoint's IPv6 address is derived, never allocated: the site's IPv6
// prefix (the /64 the gateway routes to the bridge, identity ipv6_prefix)
// with the endpoint's IPv4 host number as interface identifier, written
// in decimal and read as hex so that it reads the same (sensor-17 at
// 10.10.8.17 → 2001:db8:8::17; host number 261 of a /16 → ::261). It is
// as stable as the IPv4 address, needs no state and no second allocator,
// and the bridge owns the whole /64 as one route (ipstack.AddPrefix).

// ErrBadPrefix6 is returned for an IPv6 site prefix that is not IPv6 or
// longer than /64.
var ErrBadPrefix6 = errors.New("device: site IPv6 prefix must be IPv6 and at most /64")

// CheckPrefix6 validates an IPv6 site prefix.
func CheckPrefix6(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 64 {
		return fmt.Errorf("%w: %s", ErrBadPrefix6, p)
	}
	return nil
}

// IPv6Addr returns the IPv6 address of the endpoint at a (IPv4, in
// prefix4) in prefix6, or the zero Addr when prefix6 is unset or a is not
// in prefix4.
func IPv6Addr(prefix4, prefix6 netip.Prefix, a netip.Addr) netip.Addr {
	if !prefix6.IsValid() || !a.Is4() || !prefix4.Contains(a) {
		return netip.Addr{}
	}
	b, base := a.As4(), prefix4.Masked().Addr().As4()
	host := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) -
		(uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3]))
	iid, err := strconv.ParseUint(strconv.FormatUint(uint64(host), 10), 16, 64)
	if err != nil {
		return netip.Addr{}
	}
	v := prefix6.Masked().Addr().As16()
	for i := 0; i < 8; i++ {
		v[15-i] |= byte(iid >> (8 * i))
	}
	return netip.AddrFrom16(v)
}

// SetIPv6Prefix gives every endpoint (present and future) its IPv6
// address in p (see IPv6Addr); the zero Prefix takes them away. The state
// file is not changed: the address is derived.
func (r *Registry) SetIPv6Prefix(p netip.Prefix) error {
	if p.IsValid() {
		if err := CheckPrefix6(p); err != nil {
			return err
		}
		p = p.Masked()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	all := make([]*Endpoint, 0, len(r.byName))
	for _, e := range r.byName {
		all = append(all, e)
	}
	for _, e := range all {
		r.unindex(e)
	}
	r.prefix6 = p
	for _, e := range all {
		r.index(e)
	}
	return nil
}

// IPv6Prefix returns the site's IPv6 prefix (zero when none is set).
func (r *Registry) IPv6Prefix() netip.Prefix {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.prefix6
}
