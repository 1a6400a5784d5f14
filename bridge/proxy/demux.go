package proxy

// The demultiplexer: the one entry point of central → device CoAP. The
// stack owns the site prefix as a route (ipstack.AddPrefix) and hands
// every datagram for <any routed address>:5683 to demux, which finds the
// endpoint by destination address in one map lookup. An address with no
// CoAP endpoint is refused: ipstack counts it (Stats.Route.NoEndpoint) and
// answers ICMP port unreachable, rate-limited.

import (
	"net"
	"net/netip"
)

// demux is the ipstack.UDPHandler of the CoAP port. It runs on the
// stack's inbound goroutine; the read lock held across handleDown makes
// RemoveEndpoint wait for a datagram being handled, so none is handled
// for an endpoint once RemoveEndpoint returned.
func (p *Proxy) demux(src, dst netip.AddrPort, payload []byte) bool {
	p.dmu.RLock()
	defer p.dmu.RUnlock()
	e := p.byAddr[dst.Addr()]
	if e == nil {
		return false
	}
	p.Stats.Demuxed.Add(1)
	p.handleDown(e, payload, net.UDPAddrFromAddrPort(src))
	return true
}
