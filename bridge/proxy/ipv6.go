package proxy

// IPv6 endpoint addresses (issue 24). When the site has an IPv6 prefix
// (registry.Registry.SetIPv6Prefix), the stack owns it as one route beside
// the IPv4 prefix, and every CoAP endpoint is in the demultiplexer under
// both addresses: central → [endpoint v6]:5683 reaches the same endpoint
// state as central → endpoint v4:5683. What the relay sends to a central
// peer leaves from the endpoint's address of that peer's family.

import (
	"fmt"
	"net/netip"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// routeIPv6 routes the registry's IPv6 site prefix (if any) to the stack.
func routeIPv6(cfg Config) error {
	p6 := cfg.Registry.IPv6Prefix()
	if !p6.IsValid() {
		return nil
	}
	if err := cfg.Stack.AddPrefix(p6); err != nil {
		return fmt.Errorf("proxy: route the site IPv6 prefix %s: %w", p6, err)
	}
	return nil
}

// srcFor returns ep's address to send to dst from: its IPv6 address for
// an IPv6 destination when it has one, else its IPv4 address.
func srcFor(ep registry.Endpoint, dst netip.Addr) netip.Addr {
	if dst.Is6() && !dst.Is4In6() && ep.Addr6.IsValid() {
		return ep.Addr6
	}
	return ep.Addr
}

// indexLocked puts e in the demultiplexer under its addresses; p.dmu held.
func (p *Proxy) indexLocked(e *endpointState) {
	p.byAddr[e.ep.Addr] = e
	if e.ep.Addr6.IsValid() {
		p.byAddr[e.ep.Addr6] = e
	}
}

// unindexLocked takes e out of the demultiplexer (the entries that are
// still its own); p.dmu held.
func (p *Proxy) unindexLocked(e *endpointState) {
	for _, a := range []netip.Addr{e.ep.Addr, e.ep.Addr6} {
		if a.IsValid() && p.byAddr[a] == e {
			delete(p.byAddr, a)
		}
	}
}

// removeAddrs drops what the stack holds for ep's addresses (virtual
// conns, TCP dialled from them).
func (p *Proxy) removeAddrs(ep registry.Endpoint) {
	for _, a := range []netip.Addr{ep.Addr, ep.Addr6} {
		if !a.IsValid() {
			continue
		}
		if err := p.cfg.Stack.RemoveAddress(a); err != nil {
			p.warnf("remove endpoint address", "endpoint", ep.Name, "err", err.Error())
		}
	}
}
