// Package pool hands out IPCP addresses (RFC 1332 §3.3) from one IPv4
// prefix. An identity that reconnects gets its previous address back when
// it is still free, so central ACLs and logs keep seeing the same address.
// Static addresses from the configuration are reserved and never handed
// out dynamically.
package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Errors.
var (
	ErrExhausted = errors.New("pool: no free address")
	ErrNotInPool = errors.New("pool: address outside the pool")
	ErrInUse     = errors.New("pool: address in use")
)

// Pool is safe for concurrent use.
type Pool struct {
	prefix netip.Prefix
	first  uint32 // first usable host
	size   uint32

	mu       sync.Mutex
	used     []bool            // by offset from first: allocated or reserved
	refs     []uint16          // holders of an allocated offset (relogin overlap)
	owner    map[uint32]string // allocated offset -> identity
	reserved map[uint32]bool   // static addresses
	sticky   map[string]uint32 // identity -> last offset it had
	next     uint32            // next-fit cursor
	inUse    int
	// lo and hi bound the offsets Allocate hands out (a fleet slice,
	// SetSlice); the whole pool by default.
	lo, hi uint32
}

// New makes a pool over prefix, excluding the network and broadcast
// addresses and gateway (the gateway's own PPP address).
func New(prefix netip.Prefix, gateway netip.Addr) (*Pool, error) {
	if !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return nil, fmt.Errorf("pool: %s: want an IPv4 prefix of /30 or larger", prefix)
	}
	prefix = prefix.Masked()
	base := u32(prefix.Addr())
	total := uint32(1) << (32 - prefix.Bits())
	p := &Pool{prefix: prefix, first: base + 1, size: total - 2, reserved: map[uint32]bool{}, sticky: map[string]uint32{}, owner: map[uint32]string{}}
	p.lo, p.hi = 0, p.size-1
	p.used = make([]bool, p.size)
	p.refs = make([]uint16, p.size)
	if gateway.IsValid() && prefix.Contains(gateway) {
		if off, ok := p.offset(gateway); ok {
			p.used[off] = true
			p.reserved[off] = true
		}
	}
	return p, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (p *Pool) offset(a netip.Addr) (uint32, bool) {
	if !a.Is4() || !p.prefix.Contains(a) {
		return 0, false
	}
	v := u32(a)
	if v < p.first || v >= p.first+p.size {
		return 0, false
	}
	return v - p.first, true
}

// Prefix is the pool's prefix.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// ErrSlice is returned by SetSlice for bounds outside the pool.
var ErrSlice = errors.New("pool: slice outside the pool")

// SetSlice limits dynamic allocation to the addresses lo..hi (inclusive):
// the part of a fleet-wide pool this gateway serves, disjoint from the
// other gateways' slices. Claim (RADIUS Framed-IP-Address) and Reserve
// (static addresses) still take any address of the pool.
func (p *Pool) SetSlice(lo, hi netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok1 := p.offset(lo)
	h, ok2 := p.offset(hi)
	if !ok1 || !ok2 || h < l {
		return fmt.Errorf("%w: %s-%s in %s", ErrSlice, lo, hi, p.prefix)
	}
	p.lo, p.hi, p.next = l, h, l
	return nil
}

// inSlice reports whether an offset may be handed out by Allocate.
func (p *Pool) inSlice(off uint32) bool { return off >= p.lo && off <= p.hi }

// Reserve takes a static address out of dynamic allocation. Addresses
// outside the pool are accepted and ignored (static addresses need not be
// in the pool).
func (p *Pool) Reserve(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.offset(a); ok {
		p.reserved[off] = true
		p.used[off] = true
	}
}

// Allocate returns an address for identity: its previous one if free or
// still held by the same identity (a relogin overlapping the session it
// replaces gets the same address), otherwise the next free one. Every
// Allocate is matched by one Release.
func (p *Pool) Allocate(identity string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.sticky[identity]; ok && p.inSlice(off) && (!p.used[off] || (p.refs[off] > 0 && p.owner[off] == identity)) {
		return p.take(identity, off), nil
	}
	n := p.hi - p.lo + 1
	if p.next < p.lo || p.next > p.hi {
		p.next = p.lo
	}
	for i := uint32(0); i < n; i++ {
		off := p.lo + (p.next-p.lo+i)%n
		if !p.used[off] {
			p.next = p.lo + (off-p.lo+1)%n
			return p.take(identity, off), nil
		}
	}
	return netip.Addr{}, ErrExhausted
}

func (p *Pool) take(identity string, off uint32) netip.Addr {
	if p.refs[off] == 0 {
		p.used[off] = true
		p.inUse++
		p.owner[off] = identity
	}
	p.refs[off]++
	p.sticky[identity] = off
	return addr(p.first + off)
}

// Claim marks a specific address (e.g. Framed-IP-Address from RADIUS) as
// used by identity; it fails with ErrInUse only when another identity holds
// it. Addresses outside the pool are accepted and not tracked.
func (p *Pool) Claim(identity string, a netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.offset(a)
	if !ok {
		return nil
	}
	if p.reserved[off] {
		return nil // static address: tracked by its identity, not the pool
	}
	if p.used[off] && p.owner[off] != identity {
		return ErrInUse
	}
	p.take(identity, off)
	return nil
}

// Release returns an address taken by Allocate or Claim. Reserved and
// foreign addresses are ignored.
func (p *Pool) Release(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.offset(a)
	if !ok || p.reserved[off] || !p.used[off] {
		return
	}
	p.refs[off]--
	if p.refs[off] == 0 {
		p.used[off] = false
		delete(p.owner, off)
		p.inUse--
	}
}

// InUse is the number of dynamically allocated addresses.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// Free is the number of addresses Allocate can still hand out.
func (p *Pool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for off := p.lo; off <= p.hi; off++ {
		if !p.used[off] {
			n++
		}
	}
	return n
}
