// Package policy is the per-identity least-privilege filter of the data
// plane: an allow-list of destination prefixes, protocols and destination
// ports, with a default of deny (configurable). It is compiled from the
// configuration into immutable values; a reload builds a new Set and the
// router swaps it in atomically.
package policy

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/config"
)

// Rule allows packets matching all of its set fields.
type Rule struct {
	Dst   netip.Prefix // invalid (zero) = any destination
	Proto uint8        // 0 = any protocol
	Ports [][2]uint16  // inclusive destination port ranges; nil = any
}

// Policy is one identity's compiled allow-list.
type Policy struct {
	Name         string
	DefaultAllow bool
	Rules        []Rule
}

// Match reports whether the packet (already validated) is allowed.
// Non-first fragments carry no ports: they match a rule on destination and
// protocol alone (the first fragment was checked with ports).
func (p *Policy) Match(h header.IPv4) bool {
	if p == nil {
		return false
	}
	dst, proto := netip.AddrFrom4([4]byte(h.DestinationAddressSlice())), h.Protocol()
	port, dp := portNone, uint16(0)
	switch pl := h.Payload(); {
	case h.FragmentOffset() != 0:
		port = portAny
	case (proto == uint8(header.TCPProtocolNumber) || proto == uint8(header.UDPProtocolNumber)) && len(pl) >= 4:
		port, dp = portKnown, header.UDP(pl).DestinationPort() // TCP's is at the same offset
	}
	return p.match(dst, proto, dp, port)
}

// MatchFlow is Match for a packet given by its destination, protocol and
// destination port (hasPort false: none, e.g. ICMP), as the IPv6 path has
// them from its parser. A rule with an IPv4 destination prefix never
// matches an IPv6 destination; a rule without one matches both families.
func (p *Policy) MatchFlow(dst netip.Addr, proto uint8, dport uint16, hasPort bool) bool {
	if p == nil {
		return false
	}
	port := portNone
	if hasPort {
		port = portKnown
	}
	return p.match(dst, proto, dport, port)
}

// What a packet tells of its destination port, for rules with ports.
const (
	portNone  = iota // no port (ICMP, no TCP/UDP header): such rules do not match
	portKnown        // dport is the destination port
	portAny          // a non-first fragment: such rules match on destination and protocol
)

// match is Match and MatchFlow: the first rule that matches decides,
// else the policy's default.
func (p *Policy) match(dst netip.Addr, proto uint8, dport uint16, port int) bool {
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Dst.IsValid() && !r.Dst.Contains(dst) {
			continue
		}
		if r.Proto != 0 && r.Proto != proto {
			continue
		}
		if len(r.Ports) == 0 || port == portAny {
			return true
		}
		if port == portNone {
			continue
		}
		for _, pr := range r.Ports {
			if dport >= pr[0] && dport <= pr[1] {
				return true
			}
		}
	}
	return p.DefaultAllow
}

// Set maps identities to their policies.
type Set struct {
	byIdentity map[string]*Policy
	def        *Policy
}

// Compile builds the Set for a configuration: each identity gets its named
// policy, or the default (policy.default) when it names none.
func Compile(c *config.Config) *Set {
	s := &Set{byIdentity: map[string]*Policy{}, def: &Policy{Name: "default", DefaultAllow: c.Policy.Default == config.Allow}}
	named := map[string]*Policy{}
	for name, cp := range c.Policies {
		p := &Policy{Name: name, DefaultAllow: cp.Default == config.Allow}
		for _, r := range cp.Allow {
			p.Rules = append(p.Rules, Rule{Dst: r.DstPrefix, Proto: r.ProtoNum, Ports: r.PortRanges})
		}
		named[name] = p
	}
	for _, id := range c.Identities {
		if p, ok := named[id.Policy]; ok {
			s.byIdentity[id.Name] = p
		}
	}
	return s
}

// For returns the policy of identity (the default policy when it has none
// or is unknown, e.g. a RADIUS-only user).
func (s *Set) For(identity string) *Policy {
	if s == nil {
		return nil
	}
	if p, ok := s.byIdentity[identity]; ok {
		return p
	}
	return s.def
}
