package dataplane

import (
	"errors"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/ipv6"
	"github.com/fleetgate/fleetgate/gateway/route"
)

// IPv6 inside the tunnel. A session routes IPv6 when its identity has an
// IPv6 site prefix (route.IPv6Session; identities.ipv6_prefix): packets
// from it must come from that prefix, go through the identity's policy
// (policy.MatchFlow: rules without a destination prefix, or with an IPv6
// one, apply), have TCP MSS clamped to the session MTU and, if larger than
// the next link's MTU, are answered with ICMPv6 Packet Too Big (IPv6
// routers never fragment, RFC 8200 §5). Link-local and multicast traffic
// is not forwarded. Malformed packets (header, payload length, extension
// header chain: ipv6.Parse) and fragments are dropped and counted. The
// gateway's ICMPv6 errors come from its link-local address fe80::1
// towards a session, and from an address of the session's prefix (the far
// end of the link that could not carry the packet) towards the host.
// Replies to conversations central hosts opened (TCP/UDP by ports,
// ICMPv6 echo by identifier) pass the policy through the same bounded
// flow table as IPv4 (flows.go).

// GatewayLinkLocal is the gateway's IPv6 address on every session link
// (the IPV6CP interface identifier ::1).
var GatewayLinkLocal = netip.MustParseAddr("fe80::1")

func (r *Router) drop6(err error) error {
	if errors.Is(err, ipv6.ErrFragment) {
		return r.drop(ReasonFragment6)
	}
	return r.drop(ReasonMalformed6)
}

func prefix6(s Session) netip.Prefix {
	if s6, ok := s.(route.IPv6Session); ok {
		return s6.IPv6Prefix()
	}
	return netip.Prefix{}
}

func (r *Router) fromSession6(s Session, pkt []byte) error {
	h := header.IPv6(pkt)
	in, err := ipv6.Parse(h)
	if err != nil {
		return r.drop6(err)
	}
	h = h[:in.Len]
	c := r.countersOf(s)
	c.RxPackets.Add(1)
	c.RxBytes.Add(uint64(len(h)))
	src, dst := ipv6.Src(h), ipv6.Dst(h)
	if src.IsLinkLocalUnicast() || dst.IsLinkLocalUnicast() || dst.IsMulticast() {
		return r.drop(ReasonLocal) // the PPP link's own traffic: never forwarded
	}
	if pfx := prefix6(s); !pfx.IsValid() || !pfx.Contains(src) {
		r.warnf("spoofed IPv6 source from session", "session_id", s.ID(), "identity", s.Identity(), "src", src)
		return r.drop(ReasonSpoofed)
	}
	if h.HopLimit() <= 1 {
		r.sendICMP6(s, ipv6.AppendTimeExceeded(nil, GatewayLinkLocal, h, in.Len), h, in)
		return r.drop(ReasonTTL)
	}
	pol := r.policies.Load().For(s.Identity())
	if !pol.MatchFlow(dst, in.Proto, in.DstPort, in.HasPorts) && !r.flows.reply6(h, in, r.cfg.Clock.Now()) {
		return r.drop(ReasonPolicy)
	}
	if ipv6.ClampMSS(h, in, s.MTU()) {
		r.Stats.MSSClamped.Add(1)
	}
	if peer := r.cfg.Sessions.Lookup(dst); peer != nil {
		if !r.s2s.Load() {
			return r.drop(ReasonSessionToSession)
		}
		h.SetHopLimit(h.HopLimit() - 1)
		return r.toSession6(peer, h, in, s)
	}
	hb := r.host.Load()
	if hb == nil {
		return r.drop(ReasonHostDown)
	}
	if mtu := hb.h.MTU(); len(h) > mtu {
		r.sendICMP6(s, ipv6.AppendPacketTooBig(nil, GatewayLinkLocal, h, in.Len, mtu), h, in)
		return r.drop(ReasonTooBig)
	}
	h.SetHopLimit(h.HopLimit() - 1)
	if err := hb.h.WritePacket(h); err != nil {
		return r.drop(ReasonHostDown)
	}
	r.Stats.ToHostPackets.Add(1)
	return nil
}

func (r *Router) fromHost6(pkt []byte, now time.Time) error {
	h := header.IPv6(pkt)
	in, err := ipv6.Parse(h)
	if err != nil {
		return r.drop6(err)
	}
	h = h[:in.Len]
	s := r.cfg.Sessions.Lookup(ipv6.Dst(h))
	if s == nil {
		return r.drop(ReasonNoRoute)
	}
	if h.HopLimit() <= 1 {
		return r.drop(ReasonTTL)
	}
	h.SetHopLimit(h.HopLimit() - 1)
	r.flows.note6(h, in, now)
	return r.toSession6(s, h, in, nil)
}

// toSession6 clamps, checks the MTU and writes to s; from is the sending
// session, or nil for the host.
func (r *Router) toSession6(s Session, h header.IPv6, in ipv6.Info, from Session) error {
	mtu := s.MTU()
	if ipv6.ClampMSS(h, in, mtu) {
		r.Stats.MSSClamped.Add(1)
	}
	if len(h) > mtu {
		src := GatewayLinkLocal
		if from == nil {
			if pfx := prefix6(s); pfx.IsValid() {
				src = pfx.Masked().Addr().Next()
			}
		}
		r.sendICMP6(from, ipv6.AppendPacketTooBig(nil, src, h, in.Len, mtu), h, in)
		return r.drop(ReasonTooBig)
	}
	if err := r.write(s, h); err != nil {
		return r.drop(ReasonSessionWrite)
	}
	return nil
}

// sendICMP6 is sendICMP for ICMPv6 errors (never about an ICMPv6 error,
// RFC 4443 §2.4(e); same rate limit).
func (r *Router) sendICMP6(to Session, icmp []byte, orig header.IPv6, in ipv6.Info) {
	if ipv6.IsError(orig, in) {
		return
	}
	r.emitICMP(to, icmp)
}
