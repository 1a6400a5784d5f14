// Package bgp is the gateway's BGP speaker: it tells the central routers
// which VPN prefixes live behind this gateway. While a session is up its
// PPP /32 and its framed routes (the site prefixes) are announced with the
// gateway's central address as next hop; they are withdrawn when the session
// ends, on graceful shutdown, and on reload when a route goes away. Another
// gateway of the fleet that takes the session over announces the same
// prefixes, so return traffic follows the session.
//
// The protocol engine is GoBGP (github.com/osrg/gobgp/v4) used as a library:
// no gRPC listener, no TCP listener (the gateway dials its neighbours), and
// an import policy that rejects every route a neighbour sends, so a
// neighbour can never grow the gateway's memory or change its forwarding.
//
// Announce and Withdraw never block: they update the desired state under a
// mutex and wake one worker goroutine that applies the difference to
// GoBGP's RIB. A neighbour that is down, slow or sending garbage therefore
// never delays a session set-up; GoBGP sends the RIB to each neighbour when
// its session comes (back) up.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Defaults, as RFC 4271 §10 suggests them (hold 90 s, keepalive a third of
// it) except ConnectRetry: RFC 4271's 120 s would leave a restarted central
// router without the fleet's routes for two minutes.
const (
	DefaultHoldTime     = 90 * time.Second
	DefaultConnectRetry = 5 * time.Second
	DefaultPort         = 179
	// DefaultMaxPrefixes bounds the prefixes one gateway announces.
	DefaultMaxPrefixes = 65536
)

// Neighbor is one BGP peer (a central router).
type Neighbor struct {
	Addr netip.Addr
	AS   uint32
	// Port is the peer's TCP port (default 179).
	Port uint16
	// Password enables TCP MD5 signatures (RFC 2385). Never logged.
	Password string
	// HoldTime (RFC 4271 §4.2); keepalives go every third of it.
	HoldTime time.Duration
	// ConnectRetry is the wait between connection attempts.
	ConnectRetry time.Duration
}

// Config configures a Speaker.
type Config struct {
	LocalAS  uint32
	RouterID netip.Addr
	// NextHop is the gateway's central address, the next hop of every
	// announced prefix.
	NextHop netip.Addr
	// NextHop6 is the gateway's central IPv6 address, the next hop of
	// every announced IPv6 prefix (sites' IPv6 prefixes, RFC 4760
	// MP_REACH_NLRI over the same sessions, IPv6 unicast negotiated).
	// Invalid: IPv6 prefixes are not announced.
	NextHop6 netip.Addr
	// LocalAddr, when valid, is the source address of the BGP sessions.
	LocalAddr netip.Addr
	// Communities (RFC 1997) attached to every announced prefix.
	Communities []uint32
	Neighbors   []Neighbor
	// MaxPrefixes bounds the announced prefixes (DefaultMaxPrefixes).
	MaxPrefixes int
	// Logger; nil discards. GoBGP's own messages are logged at error
	// level only.
	Logger *slog.Logger
}

// Stats are the speaker's counters.
type Stats struct {
	// Announced is how many prefixes are in the RIB now.
	Announced atomic.Int64
	// Announces and Withdraws count RIB changes.
	Announces atomic.Uint64
	Withdraws atomic.Uint64
	// Errors counts RIB operations GoBGP refused.
	Errors atomic.Uint64
	// OverLimit counts prefixes not announced because MaxPrefixes was
	// reached.
	OverLimit atomic.Uint64
	// PeerTransitions counts neighbour state changes (flaps show here).
	PeerTransitions atomic.Uint64
}

// NeighborState is one neighbour as `gateway status` shows it.
type NeighborState struct {
	Addr  netip.Addr `json:"addr"`
	AS    uint32     `json:"as"`
	State string     `json:"state"`
	// Since is when the neighbour entered State.
	Since time.Time `json:"since"`
	// Established is true in state "established".
	Established bool `json:"established"`
}

// Speaker announces session prefixes to the configured neighbours.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer
	// Stats are read by the daemon's metrics.
	Stats Stats

	kick    chan struct{}
	stopped chan struct{}
	running atomic.Bool // Start succeeded: the worker runs

	mu      sync.Mutex
	desired map[uint64][]netip.Prefix // owner (session ID) → prefixes
	attrs   pathAttrs                 // next hop and communities of every path
	attrGen uint64                    // bumped when attrs change: re-announce
	peers   map[netip.Addr]*NeighborState
	closed  bool

	// Owned by the worker goroutine.
	applied    map[netip.Prefix]uuid.UUID
	appliedGen uint64 // attrGen the applied paths carry
}

// ErrConfig is wrapped by configuration errors from New.
var ErrConfig = errors.New("bgp: invalid configuration")

// New checks cfg; Start connects.
func New(cfg Config) (*Speaker, error) {
	if cfg.LocalAS == 0 || !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("%w: local AS and an IPv4 router ID are required", ErrConfig)
	}
	if !cfg.NextHop.IsValid() {
		cfg.NextHop = cfg.RouterID
	}
	if !cfg.NextHop.Is4() {
		return nil, fmt.Errorf("%w: next hop %s is not IPv4", ErrConfig, cfg.NextHop)
	}
	if cfg.NextHop6.IsValid() && (!cfg.NextHop6.Is6() || cfg.NextHop6.Is4In6()) {
		return nil, fmt.Errorf("%w: IPv6 next hop %s is not IPv6", ErrConfig, cfg.NextHop6)
	}
	if cfg.MaxPrefixes <= 0 {
		cfg.MaxPrefixes = DefaultMaxPrefixes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{cfg: cfg, log: log.With("component", "bgp"), kick: make(chan struct{}, 1), stopped: make(chan struct{}),
		desired: map[uint64][]netip.Prefix{}, peers: map[netip.Addr]*NeighborState{}, applied: map[netip.Prefix]uuid.UUID{},
		attrs: pathAttrs{nextHop: cfg.NextHop, nextHop6: cfg.NextHop6, communities: cfg.Communities}}
	if err := normalize(s.cfg.Neighbors); err != nil {
		return nil, err
	}
	for _, n := range s.cfg.Neighbors {
		s.peers[n.Addr] = &NeighborState{Addr: n.Addr, AS: n.AS, State: "idle"}
	}
	return s, nil
}

// Start runs GoBGP and adds the neighbours; it returns once they are
// configured, not when they are up. The speaker runs until Stop.
func (s *Speaker) Start(ctx context.Context) error {
	lvl := &slog.LevelVar{}
	// GoBGP warns on every malformed message and every failed connection
	// attempt; neighbour state changes are logged by onPeer instead.
	lvl.Set(slog.LevelError)
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(minLevel{lvl, s.log.Handler()}), lvl))
	go s.srv.Serve()
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: s.cfg.LocalAS, RouterId: s.cfg.RouterID.String(), ListenPort: -1}}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: start: %w", err)
	}
	// Learn nothing: every route a neighbour sends is rejected (bounded
	// memory, and central routes are the host's business, not ours).
	// GoBGP runs its own paths through the same import policy, so the one
	// statement accepts locally originated routes.
	pol := &api.Policy{Name: "fleetgate-local-only", Statements: []*api.Statement{{Name: "local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}}}}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: pol.Name}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT}}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.onPeer}, server.WatchPeer()); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: watch: %w", err)
	}
	for _, n := range s.cfg.Neighbors {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(n)}); err != nil {
			s.srv.Stop()
			return fmt.Errorf("bgp: neighbour %s: %w", n.Addr, err)
		}
	}
	s.running.Store(true)
	go s.run()
	s.log.Info("bgp speaker started", "local_as", s.cfg.LocalAS, "router_id", s.cfg.RouterID, "next_hop", s.cfg.NextHop, "neighbors", len(s.cfg.Neighbors))
	return nil
}

func (s *Speaker) peer(n Neighbor) *api.Peer {
	hold := uint64(n.HoldTime / time.Second)
	keep := hold / 3
	if keep == 0 && hold > 0 {
		keep = 1
	}
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Addr.String(), PeerAsn: n.AS, AuthPassword: n.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: keep,
			ConnectRetry: uint64(n.ConnectRetry / time.Second), IdleHoldTimeAfterReset: uint64(n.ConnectRetry / time.Second)}},
		Transport: &api.Transport{RemotePort: uint32(n.Port)},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
	}
	if s.cfg.NextHop6.IsValid() {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}})
	}
	if s.cfg.LocalAddr.IsValid() {
		p.Transport.LocalAddress = s.cfg.LocalAddr.String()
	}
	return p
}

func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, now time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	name := stateName(st.SessionState)
	s.mu.Lock()
	ns := s.peers[st.NeighborAddress]
	changed := ns != nil && ns.State != name
	wasUp := ns != nil && ns.Established
	if changed {
		ns.State, ns.Since, ns.Established = name, now, st.SessionState == gbgp.BGP_FSM_ESTABLISHED
	}
	s.mu.Unlock()
	if !changed {
		return
	}
	s.Stats.PeerTransitions.Add(1)
	switch {
	case name == "established":
		s.log.Info("bgp neighbor up", "peer", st.NeighborAddress, "peer_as", st.PeerASN)
	case wasUp:
		// Once per lost session: a neighbour that never comes up is
		// not logged at every connection attempt.
		s.log.Warn("bgp neighbor down", "peer", st.NeighborAddress, "state", name, "reason", st.DisconnectReason.String(), "err", st.DisconnectMessage)
	default:
		s.log.Debug("bgp neighbor state", "peer", st.NeighborAddress, "state", name, "reason", st.DisconnectReason.String())
	}
}

func stateName(st gbgp.FSMState) string {
	switch st {
	case gbgp.BGP_FSM_IDLE:
		return "idle"
	case gbgp.BGP_FSM_CONNECT:
		return "connect"
	case gbgp.BGP_FSM_ACTIVE:
		return "active"
	case gbgp.BGP_FSM_OPENSENT:
		return "opensent"
	case gbgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case gbgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Announce sets the prefixes announced for owner (a session ID), replacing
// what it announced before. It never blocks on the network. A prefix
// announced by two owners (a relogin overlapping its old session) stays
// announced until both withdrew it.
func (s *Speaker) Announce(owner uint64, prefixes []netip.Prefix) {
	ps := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if p.IsValid() && (p.Addr().Is4() || p.Addr().Is6() && !p.Addr().Is4In6() && s.cfg.NextHop6.IsValid()) {
			ps = append(ps, p.Masked())
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.desired[owner] = ps
	s.mu.Unlock()
	s.wake()
}

// Withdraw removes what owner announced.
func (s *Speaker) Withdraw(owner uint64) {
	s.mu.Lock()
	_, ok := s.desired[owner]
	delete(s.desired, owner)
	s.mu.Unlock()
	if ok {
		s.wake()
	}
}

func (s *Speaker) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Neighbors returns the neighbours' states, sorted by address.
func (s *Speaker) Neighbors() []NeighborState {
	s.mu.Lock()
	out := make([]NeighborState, 0, len(s.peers))
	for _, n := range s.peers {
		out = append(out, *n)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// Announced returns the prefixes in the RIB now, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	want := s.union()
	s.mu.Unlock()
	return want
}

// union is the sorted set of desired prefixes, capped; s.mu held.
func (s *Speaker) union() []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	owners := make([]uint64, 0, len(s.desired))
	for o := range s.desired {
		owners = append(owners, o)
	}
	sort.Slice(owners, func(i, j int) bool { return owners[i] < owners[j] })
	var out []netip.Prefix
	for _, o := range owners {
		for _, p := range s.desired[o] {
			if seen[p] {
				continue
			}
			if len(out) >= s.cfg.MaxPrefixes {
				continue
			}
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Addr().Less(out[j].Addr()) || out[i].Addr() == out[j].Addr() && out[i].Bits() < out[j].Bits()
	})
	return out
}

// run is the worker: it applies the desired state to GoBGP's RIB.
func (s *Speaker) run() {
	defer close(s.stopped)
	for range s.kick {
		s.mu.Lock()
		want := s.union()
		total := 0
		for _, ps := range s.desired {
			total += len(ps)
		}
		closed := s.closed
		attrs, gen := s.attrs, s.attrGen
		s.mu.Unlock()
		// New attributes: announce every path again (GoBGP replaces a
		// path with the same prefix: an implicit withdraw).
		again := gen != s.appliedGen
		s.appliedGen = gen
		s.apply(want, total, attrs, again)
		if closed {
			return
		}
	}
}

func (s *Speaker) apply(want []netip.Prefix, total int, attrs pathAttrs, again bool) {
	wantSet := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wantSet[p] = true
	}
	if len(want) >= s.cfg.MaxPrefixes && total > len(want) {
		s.Stats.OverLimit.Add(1)
		s.log.Warn("bgp: prefix limit reached, some prefixes not announced", "limit", s.cfg.MaxPrefixes)
	}
	var del []uuid.UUID
	var delP []netip.Prefix
	for p, id := range s.applied {
		if !wantSet[p] {
			del = append(del, id)
			delP = append(delP, p)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: del}); err != nil {
			s.Stats.Errors.Add(1)
			s.log.Error("bgp: withdraw failed", "prefixes", delP, "err", err)
		} else {
			s.Stats.Withdraws.Add(uint64(len(del)))
			s.log.Debug("bgp: withdrawn", "prefixes", delP)
		}
		for _, p := range delP {
			delete(s.applied, p)
		}
	}
	var add []*apiutil.Path
	var addP []netip.Prefix
	for _, p := range want {
		if _, ok := s.applied[p]; ok && !again {
			continue
		}
		path, err := attrs.path(p)
		if err != nil {
			s.Stats.Errors.Add(1)
			continue
		}
		add = append(add, path)
		addP = append(addP, p)
	}
	if len(add) > 0 {
		resps, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		for i, p := range addP {
			if err == nil && i < len(resps) && resps[i].Error == nil {
				s.applied[p] = resps[i].UUID
				s.Stats.Announces.Add(1)
			} else {
				s.Stats.Errors.Add(1)
			}
		}
		if err != nil {
			s.log.Error("bgp: announce failed", "prefixes", addP, "err", err)
		} else {
			s.log.Debug("bgp: announced", "prefixes", addP)
		}
	}
	s.Stats.Announced.Store(int64(len(s.applied)))
}

// pathAttrs are the attributes every announced path carries.
type pathAttrs struct {
	nextHop     netip.Addr
	nextHop6    netip.Addr // IPv6 prefixes (MP_REACH_NLRI, RFC 4760)
	communities []uint32
}

func (pa pathAttrs) path(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := gbgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	family, hop := gbgp.RF_IPv4_UC, pa.nextHop
	if p.Addr().Is6() {
		family, hop = gbgp.RF_IPv6_UC, pa.nextHop6
	}
	var nh gbgp.PathAttributeInterface
	if family == gbgp.RF_IPv4_UC {
		nh, err = gbgp.NewPathAttributeNextHop(hop)
	} else {
		nh, err = gbgp.NewPathAttributeMpReachNLRI(family, []gbgp.PathNLRI{{NLRI: nlri}}, hop)
	}
	if err != nil {
		return nil, err
	}
	attrs := []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh}
	if len(pa.communities) > 0 {
		attrs = append(attrs, gbgp.NewPathAttributeCommunities(pa.communities))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}, nil
}

// Stop withdraws every prefix, then stops GoBGP: each neighbour gets a
// NOTIFICATION Cease and, since no graceful restart is negotiated, drops
// every route of this gateway at once. ctx bounds the wait.
func (s *Speaker) Stop(ctx context.Context) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	n := 0
	for _, ps := range s.desired {
		n += len(ps)
	}
	s.desired = map[uint64][]netip.Prefix{}
	s.mu.Unlock()
	if !s.running.Load() {
		return // never started, or Start failed (and stopped GoBGP)
	}
	s.wake()
	select {
	case <-s.stopped:
	case <-ctx.Done():
	}
	s.srv.Stop() // StopBgp: Cease to every neighbour
	s.log.Info("bgp speaker stopped", "withdrawn", n)
}

// minLevel drops records below its level (GoBGP logs through the logger
// it is given at every level, whatever its level variable says).
type minLevel struct {
	min slog.Leveler
	h   slog.Handler
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min.Level() && m.h.Enabled(ctx, l)
}

func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler { return minLevel{m.min, m.h.WithAttrs(as)} }

func (m minLevel) WithGroup(name string) slog.Handler { return minLevel{m.min, m.h.WithGroup(name)} }
