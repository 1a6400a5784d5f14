package engine

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// sessionLink is what a gateway session runs over: an L2TP/IPsec session from
// uplink/l2tpipsec, or a raw L2TP session (no IPsec).
type sessionLink interface {
	Addr() netip.Addr
	WritePacket(pkt []byte) error
	SetPacketHandler(fn func(pkt []byte))
	Done() <-chan struct{}
	Err() error
	Close() error
}

// Session is one established uplink as the gateway sees it. It implements
// route.Session, server.Terminator, server.Describer and
// server.AccountingInfo.
type Session struct {
	id       uint64
	identity string
	routes   []netip.Prefix
	ipv6     netip.Prefix // the identity's IPv6 site prefix (invalid: none)
	mtu      int
	suite    string
	outer    func() netip.AddrPort
	started  time.Time
	user     string
	class    []byte
	link     sessionLink
	// phase1 is what IKE phase 1 proved (None on the raw listener).
	phase1 server.Phase1
	// hangup, when set, also deletes the peer's IKE SA (tunnel links).
	hangup func(why error)
	// hold has the packets the client sent before registration (nil:
	// none held, the link had no early handler).
	hold *inbox
	// counters are the identity's router counters (set by serve before
	// the session is registered; nil: the router looks them up).
	counters *dataplane.Counters

	termOnce sync.Once
	// terminated is set by Terminate (reload, relogin replacement, shutdown)
	// before the link goes, so Unregister reports an administrative cause.
	mu         sync.Mutex
	terminated bool
}

// Rekeys is how many times the session's IPsec SA pair was rekeyed
// (server.Rekeyer); 0 for the raw L2TP listener, which has none.
func (s *Session) Rekeys() uint64 {
	if r, ok := s.link.(interface{ Rekeys() uint64 }); ok {
		return r.Rekeys()
	}
	return 0
}

// PeerImplementation is the client implementation peerid recognised
// (server.PeerImplementer): one of peerid.Kinds (on the raw L2TP listener
// from the L2TP AVPs alone).
func (s *Session) PeerImplementation() string {
	if p, ok := s.link.(interface{ PeerImplementation() string }); ok {
		return p.PeerImplementation()
	}
	return "unknown"
}

// ID is the process-unique session ID.
func (s *Session) ID() uint64 { return s.id }

// Identity is the configured identity name the PPP login matched.
func (s *Session) Identity() string { return s.identity }

// Addr is the session's VPN address (IPCP).
func (s *Session) Addr() netip.Addr { return s.link.Addr() }

// Routes are the session's framed routes (configured plus RADIUS).
func (s *Session) Routes() []netip.Prefix { return s.routes }

// IPv6Prefix is the site's IPv6 prefix (identities.ipv6_prefix), routed to
// this session by the router (route.IPv6Session).
func (s *Session) IPv6Prefix() netip.Prefix { return s.ipv6 }

// MTU is the effective inner MTU for the negotiated ESP suite.
func (s *Session) MTU() int { return s.mtu }

// IdentityCounters are the identity's router counters
// (dataplane.CountedSession).
func (s *Session) IdentityCounters() *dataplane.Counters { return s.counters }

// WritePacket sends one IPv4 packet down the session.
func (s *Session) WritePacket(pkt []byte) error { return s.link.WritePacket(pkt) }

// Terminate starts the teardown without blocking (PPP Terminate, CDN,
// StopCCN); the engine unregisters the session when it has ended.
func (s *Session) Terminate(reason string) {
	s.termOnce.Do(func() {
		s.mu.Lock()
		s.terminated = true
		s.mu.Unlock()
		go func() { _ = s.link.Close() }()
	})
}

// Phase1 is what IKE phase 1 proved about the peer (server.Phase1er).
func (s *Session) Phase1() server.Phase1 { return s.phase1 }

// Hangup ends the session and the peer's IKE SA (server.Hangupper): a
// revoked site cannot open a new session over its old SA.
func (s *Session) Hangup(reason string) {
	if s.hangup == nil {
		s.Terminate(reason)
		return
	}
	s.termOnce.Do(func() {
		s.mu.Lock()
		s.terminated = true
		s.mu.Unlock()
		s.hangup(errors.New(reason))
	})
}

// OuterAddr is the peer's current outer (NAT-T) address.
func (s *Session) OuterAddr() netip.AddrPort { return s.outer() }

// Suite names the ESP suite ("none" on the raw L2TP listener).
func (s *Session) Suite() string { return s.suite }

// Established is when IPCP opened.
func (s *Session) Established() time.Time { return s.started }

// PPPUser is the PPP user name the session authenticated as.
func (s *Session) PPPUser() string { return s.user }

// Class is the RADIUS Class from the Access-Accept (nil for local users).
func (s *Session) Class() []byte { return s.class }

// Done is closed when the underlying link has ended.
func (s *Session) Done() <-chan struct{} { return s.link.Done() }

// endCause maps why a session ended to a RADIUS Acct-Terminate-Cause and
// tells whether dead peer detection or LCP echo declared the peer gone.
func (s *Session) endCause(shutdown bool) (cause int, dpd, echo bool) {
	s.mu.Lock()
	term := s.terminated
	s.mu.Unlock()
	err := s.link.Err()
	switch {
	case shutdown:
		return radius.CauseNASReboot, false, false
	case errors.Is(err, ike.ErrDeadPeer):
		return radius.CauseLostCarrier, true, false
	case errors.Is(err, ppp.ErrEchoTimeout):
		return radius.CauseLostCarrier, false, true
	case term:
		return radius.CauseAdminReset, false, false
	case errors.Is(err, l2tpipsec.ErrIPsecLost):
		return radius.CauseLostCarrier, false, false
	}
	return radius.CauseUserRequest, false, false
}
