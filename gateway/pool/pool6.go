package pool

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Pool6 hands each identity an IPv6 /64 site prefix out of one shorter
// prefix (pool.ipv6_prefix, e.g. a /48 holds 65,536 of them). An
// identity's /64 is chosen by a hash of its name, probing onwards past
// taken ones, so it is the same across reconnects and restarts as long as
// nobody else took it meanwhile; while the identity has a session (a
// relogin overlaps the old one: references are counted) it keeps it. At
// most max /64s are handed out at once (bounded state; Exhausted counts
// refusals). The subnet-router anycast /64 (offset 0) is never handed out.
type Pool6 struct {
	prefix netip.Prefix
	size   uint64 // number of /64s
	max    int

	mu      sync.Mutex
	byID    map[string]*lease6
	byOff   map[uint64]*lease6
	reserve map[uint64]bool // /64s taken by static identities' ipv6_prefix

	// Exhausted counts allocations refused because max were in use or the
	// pool was full.
	Exhausted atomic.Uint64
}

type lease6 struct {
	identity string
	off      uint64
	refs     int
}

// DefaultMax6 is the default bound on /64s handed out at once.
const DefaultMax6 = 65536

// New6 makes a pool of /64s over prefix (an IPv6 prefix of /32 to /63),
// handing out at most max at once (<= 0: DefaultMax6).
func New6(prefix netip.Prefix, max int) (*Pool6, error) {
	if !prefix.Addr().Is6() || prefix.Addr().Is4In6() || prefix.Bits() < 32 || prefix.Bits() > 63 {
		return nil, fmt.Errorf("pool: %s: want an IPv6 prefix of /32 to /63 (it is cut into /64s)", prefix)
	}
	if max <= 0 {
		max = DefaultMax6
	}
	size := uint64(1) << (64 - prefix.Bits())
	if uint64(max) > size-1 {
		max = int(size - 1)
	}
	return &Pool6{prefix: prefix.Masked(), size: size, max: max,
		byID: map[string]*lease6{}, byOff: map[uint64]*lease6{}, reserve: map[uint64]bool{}}, nil
}

// Prefix is the pool's prefix.
func (p *Pool6) Prefix() netip.Prefix { return p.prefix }

// Max is the bound on /64s handed out at once.
func (p *Pool6) Max() int { return p.max }

func (p *Pool6) hi64() uint64 {
	b := p.prefix.Addr().As16()
	return binary.BigEndian.Uint64(b[:8])
}

func (p *Pool6) at(off uint64) netip.Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], p.hi64()|off)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// offsetOf returns the /64 offset of a prefix inside the pool.
func (p *Pool6) offsetOf(pf netip.Prefix) (uint64, bool) {
	if !pf.IsValid() || !pf.Addr().Is6() || pf.Bits() < p.prefix.Bits() || !p.prefix.Contains(pf.Addr()) {
		return 0, false
	}
	b := pf.Addr().As16()
	return binary.BigEndian.Uint64(b[:8]) &^ p.hi64() & (p.size - 1), true
}

// Reserve keeps the /64s of pf (a static identity's ipv6_prefix of /64 or
// shorter inside the pool: its first /64 only when shorter; validation
// refuses overlaps larger than a /64) out of dynamic allocation.
func (p *Pool6) Reserve(pf netip.Prefix) {
	if off, ok := p.offsetOf(pf); ok {
		p.mu.Lock()
		p.reserve[off] = true
		p.mu.Unlock()
	}
}

// Allocate returns identity's /64: the one it holds (another reference),
// else the first free one from the hash of its name.
func (p *Pool6) Allocate(identity string) (netip.Prefix, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byID[identity]; l != nil {
		l.refs++
		return p.at(l.off), nil
	}
	if len(p.byID) >= p.max {
		p.Exhausted.Add(1)
		return netip.Prefix{}, fmt.Errorf("%w: %d of %d IPv6 /64s of %s in use (pool.ipv6_max)", ErrExhausted, len(p.byID), p.max, p.prefix)
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(identity))
	start := h.Sum64() & (p.size - 1)
	// At most len(byOff)+len(reserve)+2 probes: fewer entries are taken.
	for i := uint64(0); i < p.size; i++ {
		off := (start + i) & (p.size - 1)
		if off == 0 || p.reserve[off] || p.byOff[off] != nil {
			continue
		}
		l := &lease6{identity: identity, off: off, refs: 1}
		p.byID[identity], p.byOff[off] = l, l
		return p.at(off), nil
	}
	p.Exhausted.Add(1)
	return netip.Prefix{}, fmt.Errorf("%w: no free IPv6 /64 in %s", ErrExhausted, p.prefix)
}

// Release drops identity's reference to pf; the /64 is free again when the
// last one goes. A prefix the pool did not hand to identity is ignored.
func (p *Pool6) Release(identity string, pf netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.byID[identity]
	if l == nil || p.at(l.off) != pf {
		return
	}
	if l.refs--; l.refs <= 0 {
		delete(p.byID, identity)
		delete(p.byOff, l.off)
	}
}

// InUse is the number of /64s handed out.
func (p *Pool6) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byID)
}
