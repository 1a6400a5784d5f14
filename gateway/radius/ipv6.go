package radius

import (
	"errors"
	"fmt"
	"net/netip"

	"layeh.com/radius"
	"layeh.com/radius/rfc3162"
	"layeh.com/radius/rfc4818"
)

// ErrIPv6Prefix is a Framed-IPv6-Prefix or Delegated-IPv6-Prefix the
// gateway cannot use as a site prefix.
var ErrIPv6Prefix = errors.New("radius: unusable IPv6 prefix")

// ParseIPv6Prefix decodes one Framed-IPv6-Prefix (RFC 3162 §2.3) or
// Delegated-IPv6-Prefix (RFC 4818 §3) value: reserved byte, prefix length,
// then at most 16 bytes of prefix with no bits set past the length. As a
// site prefix it must be a global IPv6 prefix (not v4-mapped, link-local
// or multicast) of /48 to /64, like identities.ipv6_prefix.
func ParseIPv6Prefix(v []byte) (netip.Prefix, error) {
	n, err := radius.IPv6Prefix(radius.Attribute(v))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrIPv6Prefix, err)
	}
	a, _ := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	pf := netip.PrefixFrom(a, bits)
	switch {
	case a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || a.IsLoopback():
		return netip.Prefix{}, fmt.Errorf("%w: %s is not a global prefix", ErrIPv6Prefix, pf)
	case bits < 48 || bits > 64:
		return netip.Prefix{}, fmt.Errorf("%w: %s: want a /48 to /64 site prefix", ErrIPv6Prefix, pf)
	}
	return pf, nil
}

// sitePrefix6 is the IPv6 site prefix of an Access-Accept: its
// Delegated-IPv6-Prefix (the prefix routed to the site, RFC 4818), else
// its Framed-IPv6-Prefix (RFC 3162); the first usable one of the type.
// Unusable values are returned as errors (each one counted by the caller).
func sitePrefix6(resp *radius.Packet) (netip.Prefix, []error) {
	var errs []error
	for _, typ := range []radius.Type{rfc4818.DelegatedIPv6Prefix_Type, rfc3162.FramedIPv6Prefix_Type} {
		for _, avp := range resp.Attributes {
			if avp.Type != typ {
				continue
			}
			pf, err := ParseIPv6Prefix(avp.Attribute)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			return pf, errs
		}
	}
	return netip.Prefix{}, errs
}
