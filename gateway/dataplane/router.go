// Package dataplane is the gateway's IP router between sessions and the
// host: packets from sessions are checked (source, identity policy), TCP
// MSS clamped and handed to the host (a TUN device or the userspace stack)
// or, if policy allows, to another session; packets from the host go to the
// session owning the destination by longest prefix match. Oversize packets
// with DF get ICMP "fragmentation needed" (RFC 1191); every drop is counted
// by reason.
//
// The router has no goroutine of its own: FromSession runs on the caller's
// (the session's data path) goroutine, FromHost on the host reader's.
package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Session is the session side of the router (see route.Session).
type Session = route.Session

// Host is where packets for the central network go: a TUN device or the
// userspace stack.
type Host interface {
	// WritePacket hands one IPv4 packet to the host; it must not keep pkt.
	WritePacket(pkt []byte) error
	// ReadPacket blocks for the next packet from the host.
	ReadPacket(buf []byte) (int, error)
	// MTU is the host-side MTU.
	MTU() int
	// Close releases the device and unblocks ReadPacket.
	Close() error
}

// Burster is told when RunHost routes a burst of packets that one host
// read returned (Buffered > 0: the vnet TUN split a GSO super-packet): the
// session transport (esp.Transport) then queues what the burst sends and
// writes it in full batches at Release.
type Burster interface {
	Hold()
	Release()
}

// CountedSession is a Session that carries its identity's counters
// (Router.Identity, looked up once when the session was made), so that
// the router does not look them up by name for every packet. Nil
// IdentityCounters means "look them up".
type CountedSession interface {
	Session
	IdentityCounters() *Counters
}

// countersOf returns s's identity counters.
func (r *Router) countersOf(s Session) *Counters {
	if cs, ok := s.(CountedSession); ok {
		if c := cs.IdentityCounters(); c != nil {
			return c
		}
	}
	return r.ids.get(s.Identity())
}

// buffered is a host that can say how many packets it has in hand.
type buffered interface{ Buffered() int }

// ErrDropped is returned by FromSession/FromHost when the packet was
// dropped (the reason is counted in Stats).
var ErrDropped = errors.New("dataplane: packet dropped")

// Config configures a Router.
type Config struct {
	// Sessions is the session table used for lookups.
	Sessions *route.Table
	// Policies is the initial policy set (SetPolicies swaps it).
	Policies *policy.Set
	// LocalAddr is the gateway's own VPN address (the IPCP server address);
	// it is the source of generated ICMP.
	LocalAddr netip.Addr
	// SessionToSession allows forwarding between sessions at all.
	SessionToSession bool
	// Local, if set, is offered packets addressed to LocalAddr or to the
	// limited broadcast address from a session (e.g. DHCPINFORM); it
	// returns true if it consumed the packet.
	Local func(s Session, pkt []byte) bool
	// ICMPRate limits generated ICMP errors per second (default 100).
	ICMPRate float64
	// Clock is used for flow expiry (default clock.System).
	Clock clock.Clock
	// Logger for rate-limited warnings; nil discards.
	Logger *slog.Logger
}

// Router routes IPv4 and IPv6 packets (router6.go). Safe for concurrent
// use.
type Router struct {
	cfg      Config
	host     atomic.Pointer[hostBox]
	policies atomic.Pointer[policy.Set]
	s2s      atomic.Bool
	flows    *flows
	icmp     *rate.Limiter
	warn     *rate.Limiter
	ids      identityCounters
	log      *slog.Logger
	burst    atomic.Pointer[burstBox]

	// Stats are the router's counters.
	Stats Stats
}

type hostBox struct{ h Host }

type burstBox struct{ b Burster }

// SetBurster attaches (or with nil detaches) the session transport that
// RunHost holds during a burst of host packets.
func (r *Router) SetBurster(b Burster) {
	if b == nil {
		r.burst.Store(nil)
		return
	}
	r.burst.Store(&burstBox{b})
}

// New returns a Router; attach a host with SetHost.
func New(cfg Config) *Router {
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.ICMPRate == 0 {
		cfg.ICMPRate = 100
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, flows: newFlows(), log: log,
		icmp: rate.NewLimiter(rate.Limit(cfg.ICMPRate), int(cfg.ICMPRate)),
		warn: rate.NewLimiter(1, 5)}
	r.policies.Store(cfg.Policies)
	r.s2s.Store(cfg.SessionToSession)
	return r
}

// SetHost attaches (or with nil detaches) the host device.
func (r *Router) SetHost(h Host) {
	if h == nil {
		r.host.Store(nil)
		return
	}
	r.host.Store(&hostBox{h})
}

// SetPolicies swaps the policy set (on reload).
func (r *Router) SetPolicies(p *policy.Set) { r.policies.Store(p) }

// SetSessionToSession changes whether sessions may reach each other.
func (r *Router) SetSessionToSession(on bool) { r.s2s.Store(on) }

// Identity returns the traffic counters of an identity.
func (r *Router) Identity(name string) *Counters { return r.ids.get(name) }

// EachIdentity calls fn for every identity that has counters.
func (r *Router) EachIdentity(fn func(name string, c *Counters)) { r.ids.each(fn) }

func (r *Router) drop(reason Reason) error {
	r.Stats.drops[reason].Add(1)
	return ErrDropped
}

func (r *Router) warnf(msg string, args ...any) {
	if r.warn.Allow() {
		r.log.Warn(msg, args...)
	}
}

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// FromSession routes a packet received from session s. pkt may be modified
// in place (TTL, MSS) and is not retained.
func (r *Router) FromSession(s Session, pkt []byte) error {
	r.Stats.FromSessionPackets.Add(1)
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return r.fromSession6(s, pkt)
	}
	if len(pkt) > 0 && pkt[0]>>4 != 4 {
		return r.drop(ReasonNotIPv4)
	}
	h := header.IPv4(pkt)
	if !h.IsValid(len(pkt)) {
		return r.drop(ReasonMalformed)
	}
	h = h[:h.TotalLength()]
	c := r.countersOf(s)
	c.RxPackets.Add(1)
	c.RxBytes.Add(uint64(len(h)))
	if !r.ownsSource(s, src4(h)) {
		r.warnf("spoofed source from session", "session_id", s.ID(), "identity", s.Identity(), "src", src4(h))
		return r.drop(ReasonSpoofed)
	}
	dst := dst4(h)
	if dst == r.cfg.LocalAddr || dst == broadcast {
		if r.cfg.Local != nil && r.cfg.Local(s, h) {
			r.Stats.LocalHandled.Add(1)
			return nil
		}
		if dst == broadcast {
			return r.drop(ReasonLocal)
		}
		// Anything else for the gateway's own address belongs to the host
		// (it holds that address on the TUN): route it there below.
	}
	if h.TTL() <= 1 {
		r.sendICMP(s, AppendTimeExceeded(nil, r.cfg.LocalAddr, h), h)
		return r.drop(ReasonTTL)
	}
	pol := r.policies.Load().For(s.Identity())
	if peer := r.cfg.Sessions.Lookup(dst); peer != nil {
		if !r.s2s.Load() {
			return r.drop(ReasonSessionToSession)
		}
		if !pol.Match(h) && !r.flows.reply(h, r.cfg.Clock.Now()) {
			return r.drop(ReasonPolicy)
		}
		decTTL(h)
		// Clamp to both ends' MTU: the sender's here, the receiver's in
		// toSession.
		if ClampMSS(h, s.MTU()) {
			r.Stats.MSSClamped.Add(1)
		}
		return r.toSession(peer, h, s)
	}
	if !pol.Match(h) && !r.flows.reply(h, r.cfg.Clock.Now()) {
		return r.drop(ReasonPolicy)
	}
	hb := r.host.Load()
	if hb == nil {
		return r.drop(ReasonHostDown)
	}
	if ClampMSS(h, s.MTU()) {
		r.Stats.MSSClamped.Add(1)
	}
	if mtu := hb.h.MTU(); len(h) > mtu && h.Flags()&header.IPv4FlagDontFragment != 0 {
		r.sendICMP(s, AppendFragNeeded(nil, r.cfg.LocalAddr, h, mtu), h)
		return r.drop(ReasonTooBig)
	}
	decTTL(h)
	if err := hb.h.WritePacket(h); err != nil {
		return r.drop(ReasonHostDown)
	}
	r.Stats.ToHostPackets.Add(1)
	return nil
}

// ownsSource reports whether src is the session's address or inside one
// of its framed routes (anti-spoofing, RFC 2827 ingress filtering).
func (r *Router) ownsSource(s Session, src netip.Addr) bool {
	if src == s.Addr() {
		return true
	}
	for _, p := range s.Routes() {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// FromHost routes a packet read from the host towards its session.
func (r *Router) FromHost(pkt []byte) error { return r.fromHost(pkt, r.cfg.Clock.Now()) }

// fromHost is FromHost at time now (RunHost reads the clock once per
// host read: a burst's packets share it).
func (r *Router) fromHost(pkt []byte, now time.Time) error {
	r.Stats.FromHostPackets.Add(1)
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return r.fromHost6(pkt, now)
	}
	if len(pkt) > 0 && pkt[0]>>4 != 4 {
		return r.drop(ReasonNotIPv4)
	}
	h := header.IPv4(pkt)
	if !h.IsValid(len(pkt)) {
		return r.drop(ReasonMalformed)
	}
	h = h[:h.TotalLength()]
	s := r.cfg.Sessions.Lookup(dst4(h))
	if s == nil {
		return r.drop(ReasonNoRoute)
	}
	if h.TTL() <= 1 {
		r.sendICMP(nil, AppendTimeExceeded(nil, r.cfg.LocalAddr, h), h)
		return r.drop(ReasonTTL)
	}
	r.flows.note(h, now)
	decTTL(h)
	return r.toSession(s, h, nil)
}

// toSession clamps, checks the MTU and writes to the session. from is the
// sending session, or nil for the host (where ICMP errors go).
func (r *Router) toSession(s Session, h header.IPv4, from Session) error {
	mtu := s.MTU()
	if ClampMSS(h, mtu) {
		r.Stats.MSSClamped.Add(1)
	}
	if len(h) > mtu {
		if h.Flags()&header.IPv4FlagDontFragment != 0 {
			// Towards a session the error comes from the gateway's VPN
			// address. Towards the host it must not: the host holds that
			// address on its TUN, so an ICMP from it arriving on the TUN
			// is a martian the kernel drops, and path-MTU discovery from
			// the gateway host itself would fail. It comes from the
			// session's address instead, the far end of the link that
			// cannot carry the packet, routed through the TUN.
			src := r.cfg.LocalAddr
			if from == nil && s.Addr().IsValid() {
				src = s.Addr()
			}
			r.sendICMP(from, AppendFragNeeded(nil, src, h, mtu), h)
			return r.drop(ReasonTooBig)
		}
		r.Stats.Fragmented.Add(1)
		err := Fragment(h, mtu, func(frag []byte) error { return r.write(s, frag) })
		if err != nil {
			return r.drop(ReasonSessionWrite)
		}
		return nil
	}
	if err := r.write(s, h); err != nil {
		return r.drop(ReasonSessionWrite)
	}
	return nil
}

func (r *Router) write(s Session, pkt []byte) error {
	if err := s.WritePacket(pkt); err != nil {
		return err
	}
	c := r.countersOf(s)
	c.TxPackets.Add(1)
	c.TxBytes.Add(uint64(len(pkt)))
	r.Stats.ToSessionPackets.Add(1)
	return nil
}

// sendICMP sends a generated ICMP error towards the original sender: a
// session, or the host when to is nil. Errors about ICMP errors are never
// sent (RFC 1122 §3.2.2).
func (r *Router) sendICMP(to Session, icmp []byte, orig header.IPv4) {
	if isICMPError(orig) || !r.cfg.LocalAddr.IsValid() {
		return
	}
	r.emitICMP(to, icmp)
}

// emitICMP sends an ICMP or ICMPv6 error within the one rate limit, to the
// session to or (nil) the host.
func (r *Router) emitICMP(to Session, icmp []byte) {
	if !r.icmp.Allow() {
		r.Stats.ICMPRateLimited.Add(1)
		return
	}
	r.Stats.ICMPSent.Add(1)
	if to != nil {
		_ = to.WritePacket(icmp)
		return
	}
	if hb := r.host.Load(); hb != nil {
		_ = hb.h.WritePacket(icmp)
	}
}

// RunHost reads packets from the attached host and routes them until ctx
// is done or the host is closed. Run it on one goroutine.
func (r *Router) RunHost(ctx context.Context) error {
	hb := r.host.Load()
	if hb == nil {
		return errors.New("dataplane: no host attached")
	}
	buf := make([]byte, 65535)
	bh, _ := hb.h.(buffered)
	for {
		n, err := hb.h.ReadPacket(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var held Burster
		if bh != nil && bh.Buffered() > 0 {
			if bb := r.burst.Load(); bb != nil {
				held = bb.b
				held.Hold()
			}
		}
		now := r.cfg.Clock.Now()
		_ = r.fromHost(buf[:n], now)
		if held != nil {
			// The rest of the burst is in memory: no ReadPacket below
			// blocks while the transport is held.
			for bh.Buffered() > 0 {
				if n, err = hb.h.ReadPacket(buf); err != nil {
					break
				}
				_ = r.fromHost(buf[:n], now)
			}
			held.Release()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
