package engine

import (
	"net"
	"net/netip"
	"sync"
)

// admitConn wraps the IKE or NAT-T socket and asks the gateway's admission
// limiter about every first phase 1 message (responder cookie zero, RFC 2408
// §3.1) before the IKE engine sees it, so a refused initiator costs no
// Diffie-Hellman work. uplink/tunnel has no admission hook, so the check
// sits below it, on the socket. Retransmissions of an admitted first
// message are not charged again.
type admitConn struct {
	net.PacketConn
	udp    *net.UDPConn
	natt   bool
	allow  func(src netip.Addr) bool
	refuse func(src netip.Addr)
	// first is told about every newly admitted first message.
	first func(src netip.Addr)

	mu       sync.Mutex
	admitted map[[8]byte]struct{}
}

func newAdmitConn(pc net.PacketConn, natt bool, allow func(netip.Addr) bool, refuse, first func(netip.Addr)) *admitConn {
	c := &admitConn{PacketConn: pc, natt: natt, allow: allow, refuse: refuse, first: first, admitted: map[[8]byte]struct{}{}}
	c.udp, _ = pc.(*net.UDPConn)
	return c
}

// ReadFrom returns the next datagram that is not a refused first phase 1
// message.
func (c *admitConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		var (
			n   int
			src netip.AddrPort
			a   net.Addr
			err error
		)
		if c.udp != nil {
			n, src, err = c.udp.ReadFromUDPAddrPort(b)
			if err == nil {
				src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			}
		} else {
			n, a, err = c.PacketConn.ReadFrom(b)
			if err == nil {
				src, _ = netip.ParseAddrPort(a.String())
			}
		}
		if err != nil {
			return n, a, err
		}
		if ic, ok := firstPhase1(b[:n], c.natt); ok && !c.admit(ic, src.Addr()) {
			continue
		}
		if a == nil {
			a = net.UDPAddrFromAddrPort(src)
		}
		return n, a, nil
	}
}

func (c *admitConn) admit(ic [8]byte, src netip.Addr) bool {
	c.mu.Lock()
	_, seen := c.admitted[ic]
	c.mu.Unlock()
	if seen {
		return true
	}
	if !c.allow(src) {
		c.refuse(src)
		return false
	}
	c.mu.Lock()
	if len(c.admitted) >= admittedMax {
		clear(c.admitted)
	}
	c.admitted[ic] = struct{}{}
	c.mu.Unlock()
	if c.first != nil {
		c.first(src)
	}
	return true
}

// firstPhase1 reports whether b is the first message of a Main or
// Aggressive Mode (RFC 2408 §3.1: responder cookie still zero) and returns
// the initiator cookie. On the NAT-T port IKE follows a non-ESP marker;
// anything else there (ESP, keepalives) is not inspected.
func firstPhase1(b []byte, natt bool) ([8]byte, bool) {
	var ic [8]byte
	if natt {
		if len(b) < nonESPMarkerLen || b[0]|b[1]|b[2]|b[3] != 0 {
			return ic, false
		}
		b = b[nonESPMarkerLen:]
	}
	if len(b) < isakmpHeaderLen {
		return ic, false
	}
	for _, x := range b[8:16] {
		if x != 0 {
			return ic, false
		}
	}
	if et := b[18]; et != exchIdentityProtection && et != exchAggressive {
		return ic, false
	}
	copy(ic[:], b[:8])
	return ic, true
}
