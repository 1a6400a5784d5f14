// Package route is the gateway's session table: every established session
// by ID and identity, and the forwarding table that maps a destination
// address to a session by longest prefix match over each session's VPN
// address (/32) and framed routes (RFC 2865 §5.22 Framed-Route: a site
// prefix routed to that session).
//
// Lookups are lock-free (a sync.Map mirror plus an atomic bitmask of the
// prefix lengths in use), so the data plane never waits on a control-plane
// change, and adding a session costs the same with 10 or 10k in the table.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
)

// Session is the gateway-side view of one established uplink session (an
// IKE SA + L2TP session + PPP link). The session engine implements it.
type Session interface {
	// ID is unique for the life of the process.
	ID() uint64
	// Identity is the configured identity name.
	Identity() string
	// Addr is the session's VPN address (IPCP).
	Addr() netip.Addr
	// Routes are the framed routes routed to this session.
	Routes() []netip.Prefix
	// WritePacket sends one IPv4 packet down the session (PPP → L2TP →
	// ESP). It must not block for long and must not keep pkt.
	WritePacket(pkt []byte) error
	// MTU is the session's effective MTU (see MTU in package dataplane).
	MTU() int
}

// Errors returned by Add.
var (
	ErrAddrInUse  = errors.New("route: VPN address already used by another session")
	ErrRouteInUse = errors.New("route: framed route already routed to another identity")
	ErrLoggedIn   = errors.New("route: identity already has a session and replacement is off")
	ErrDuplicate  = errors.New("route: session ID already in the table")
)

// Table is safe for concurrent use. Writers serialise on mu and keep the
// authoritative prefix map; readers use a sync.Map mirror and a bitmask of
// the prefix lengths present, so Add and Remove cost O(routes of the
// session) and Lookup at most one map probe per length present.
type Table struct {
	mu         sync.Mutex // serialises writers
	byID       map[uint64]Session
	byIdentity map[string]Session
	owned      map[netip.Prefix]Session // authoritative, under mu
	lenCount   [97]int                  // prefixes per lenIndex, under mu

	fwd      sync.Map      // netip.Prefix -> Session, read lock-free
	lenMask  atomic.Uint64 // bit n set when an IPv4 prefix of length n exists
	lenMask6 atomic.Uint64 // bit n-1 set when an IPv6 prefix of length n (1..64) exists
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{byID: map[uint64]Session{}, byIdentity: map[string]Session{}, owned: map[netip.Prefix]Session{}}
}

// IPv6Session is a Session with an IPv6 site prefix (IPV6CP opened);
// the table routes that prefix to it too.
type IPv6Session interface {
	Session
	// IPv6Prefix is the site's IPv6 prefix (invalid: none).
	IPv6Prefix() netip.Prefix
}

func prefixesOf(s Session) []netip.Prefix {
	out := []netip.Prefix{netip.PrefixFrom(s.Addr(), 32)}
	for _, r := range s.Routes() {
		out = append(out, r.Masked())
	}
	if s6, ok := s.(IPv6Session); ok {
		if p := s6.IPv6Prefix(); p.IsValid() && p.Addr().Is6() && p.Bits() <= 64 {
			out = append(out, p.Masked())
		}
	}
	return out
}

// lenIndex maps a prefix to its slot in lenCount: IPv4 /0../32 at 0..32,
// IPv6 /1../64 at 33..96.
func lenIndex(p netip.Prefix) int {
	if p.Addr().Is6() {
		return 32 + p.Bits()
	}
	return p.Bits()
}

// Add registers s. If the identity already has a session, replace decides:
// true removes the old one from the table and returns it (the caller tears
// it down), false refuses with ErrLoggedIn. A VPN address or framed route
// held by another identity's session is refused.
func (t *Table) Add(s Session, replace bool) (old Session, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byID[s.ID()]; dup {
		return nil, ErrDuplicate
	}
	old = t.byIdentity[s.Identity()]
	if old != nil && !replace {
		return nil, ErrLoggedIn
	}
	prefixes := prefixesOf(s)
	for _, p := range prefixes {
		if holder, ok := t.owned[p]; ok && holder != old {
			if p.Bits() == 32 && p.Addr() == s.Addr() {
				return nil, fmt.Errorf("%w: %s held by %s", ErrAddrInUse, p.Addr(), holder.Identity())
			}
			return nil, fmt.Errorf("%w: %s held by %s", ErrRouteInUse, p, holder.Identity())
		}
	}
	if old != nil {
		delete(t.byID, old.ID())
		t.unpublish(old)
	}
	t.byID[s.ID()] = s
	t.byIdentity[s.Identity()] = s
	for _, p := range prefixes {
		if _, exists := t.owned[p]; !exists {
			t.lenCount[lenIndex(p)]++
		}
		t.owned[p] = s
		t.fwd.Store(p, s)
	}
	t.updateMask()
	return old, nil
}

// unpublish removes the prefixes s still owns; t.mu must be held.
func (t *Table) unpublish(s Session) {
	for _, p := range prefixesOf(s) {
		if t.owned[p] == s {
			delete(t.owned, p)
			t.fwd.Delete(p)
			t.lenCount[lenIndex(p)]--
		}
	}
}

func (t *Table) updateMask() {
	var m, m6 uint64
	for i, n := range t.lenCount {
		switch {
		case n == 0:
		case i <= 32:
			m |= 1 << i
		default:
			m6 |= 1 << (i - 33)
		}
	}
	t.lenMask.Store(m)
	t.lenMask6.Store(m6)
}

// Remove unregisters s; it reports false if s is not (or no longer) in the
// table, e.g. because a newer session of its identity replaced it.
func (t *Table) Remove(s Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.byID[s.ID()]; !ok || cur != s {
		return false
	}
	delete(t.byID, s.ID())
	if t.byIdentity[s.Identity()] == s {
		delete(t.byIdentity, s.Identity())
	}
	t.unpublish(s)
	t.updateMask()
	return true
}

// Lookup returns the session whose address or framed route is the longest
// prefix containing dst, or nil.
func (t *Table) Lookup(dst netip.Addr) Session {
	if dst.Is6() && !dst.Is4In6() {
		return t.lookup6(dst)
	}
	if !dst.Is4() {
		return nil
	}
	mask := t.lenMask.Load()
	for bits := 32; bits >= 0; bits-- {
		if mask&(1<<bits) == 0 {
			continue
		}
		p, _ := dst.Prefix(bits)
		if v, ok := t.fwd.Load(p); ok {
			return v.(Session)
		}
	}
	return nil
}

// ByID returns the session with that ID, or nil.
func (t *Table) ByID(id uint64) Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// ByIdentity returns the identity's current session, or nil.
func (t *Table) ByIdentity(name string) Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIdentity[name]
}

// Sessions returns all sessions ordered by ID.
func (t *Table) Sessions() []Session {
	t.mu.Lock()
	out := make([]Session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// Len is the number of sessions.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// lookup6 is Lookup for an IPv6 destination: the session whose IPv6 site
// prefix (/1../64) contains it.
func (t *Table) lookup6(dst netip.Addr) Session {
	mask := t.lenMask6.Load()
	for bits := 64; bits >= 1; bits-- {
		if mask&(1<<(bits-1)) == 0 {
			continue
		}
		p, _ := dst.Prefix(bits)
		if v, ok := t.fwd.Load(p); ok {
			return v.(Session)
		}
	}
	return nil
}
