package server

import (
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/internal/srcaddr"
)

// Backoff slows repeated failed logins (IKE authentication and PPP
// passwords) per source address and per identity, without locking an
// identity out of an address it has logged in from:
//
//   - after Free failures from one source, each further attempt from it
//     must wait Delay after the last failure, doubling per failure up to
//     MaxDelay;
//   - likewise after IdentityFree failures for one identity (default 4 x
//     Free: a single source is stopped by its own limit first, so this
//     catches guessing spread over many sources), for attempts from
//     sources that identity never logged in from;
//   - an identity logging in from an address it logged in from before
//     (within Forget) is never slowed, whatever else fails there;
//   - a record is forgotten Forget after its last failure.
//
// State is bounded: at most maxBackoffEntries records of each kind (the
// oldest are dropped first when full).
type Backoff struct {
	Free, IdentityFree int
	Delay, MaxDelay    time.Duration
	Forget             time.Duration
	Now                func() time.Time

	mu    sync.Mutex
	src   map[netip.Addr]*failRec
	ident map[string]*failRec
	known map[knownKey]time.Time
	// knownSrc: addresses some identity logged in from (never slowed at IKE).
	knownSrc map[netip.Addr]time.Time
}

// NewBackoff returns a Backoff with the given limits and clock.
func NewBackoff(free int, delay, maxDelay, forget time.Duration, now func() time.Time) *Backoff {
	return &Backoff{Free: free, IdentityFree: 4 * free, Delay: delay, MaxDelay: maxDelay, Forget: forget, Now: now,
		src: map[netip.Addr]*failRec{}, ident: map[string]*failRec{}, known: map[knownKey]time.Time{}, knownSrc: map[netip.Addr]time.Time{}}
}

// CheckSource is Check before any identity is known (a new Main Mode): an
// address some identity logged in from is never slowed here (the PPP
// login then checks the identity).
func (b *Backoff) CheckSource(src netip.Addr) time.Duration {
	if b == nil {
		return 0
	}
	src = srcaddr.Key(src) // an IPv6 source counts as its /64
	now := b.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.knownSrc[src]; ok && now.Sub(t) <= b.Forget {
		return 0
	}
	return b.wait(b.src[src], b.Free, now)
}

// SetParams changes the limits (reload).
func (b *Backoff) SetParams(free int, delay, maxDelay, forget time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Free, b.IdentityFree, b.Delay, b.MaxDelay, b.Forget = free, 4*free, delay, maxDelay, forget
}

type failRec struct {
	n    int
	last time.Time
}

type knownKey struct {
	identity string
	addr     netip.Addr
}

// maxBackoffEntries bounds each table of a Backoff.
const maxBackoffEntries = 1 << 16

// wait is how long after rec's last failure the next attempt must wait.
func (b *Backoff) wait(r *failRec, free int, now time.Time) time.Duration {
	if r == nil || r.n < free || now.Sub(r.last) > b.Forget {
		return 0
	}
	d := b.Delay
	for i := free; i < r.n && d < b.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, b.MaxDelay)
	if left := r.last.Add(d).Sub(now); left > 0 {
		return left
	}
	return 0
}

// Check returns how long an attempt from src (for identity, "" when not
// known yet) must still wait; 0 admits it.
func (b *Backoff) Check(src netip.Addr, identity string) time.Duration {
	if b == nil {
		return 0
	}
	src = srcaddr.Key(src) // an IPv6 source counts as its /64
	now := b.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if identity != "" {
		if t, ok := b.known[knownKey{identity, src}]; ok && now.Sub(t) <= b.Forget {
			return 0
		}
	}
	w := b.wait(b.src[src], b.Free, now)
	if identity != "" {
		w = max(w, b.wait(b.ident[identity], b.IdentityFree, now))
	}
	return w
}

// Failed records a failed attempt from src for identity ("" when the
// identity is unknown).
func (b *Backoff) Failed(src netip.Addr, identity string) {
	if b == nil {
		return
	}
	src = srcaddr.Key(src) // an IPv6 source counts as its /64
	now := b.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	bump(b.src, src, now, b.Forget)
	if identity != "" {
		bump(b.ident, identity, now, b.Forget)
	}
}

// Succeeded records a login of identity from src: that address is now
// known for it, and the source's failures are forgotten.
func (b *Backoff) Succeeded(src netip.Addr, identity string) {
	if b == nil {
		return
	}
	src = srcaddr.Key(src) // an IPv6 source counts as its /64
	now := b.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.known) >= maxBackoffEntries {
		evictOldest(b.known, func(t time.Time) time.Time { return t })
	}
	if len(b.knownSrc) >= maxBackoffEntries {
		evictOldest(b.knownSrc, func(t time.Time) time.Time { return t })
	}
	b.known[knownKey{identity, src}] = now
	b.knownSrc[src] = now
	delete(b.src, src)
}

func bump[K comparable](m map[K]*failRec, k K, now time.Time, forget time.Duration) {
	r := m[k]
	if r != nil && now.Sub(r.last) > forget {
		r.n = 0
	}
	if r == nil {
		if len(m) >= maxBackoffEntries {
			evictOldest(m, func(r *failRec) time.Time { return r.last })
		}
		r = &failRec{}
		m[k] = r
	}
	r.n++
	r.last = now
}

// evictOldest drops the oldest eighth of a full table (one pass, no sort).
func evictOldest[K comparable, V any](m map[K]V, at func(V) time.Time) {
	var oldest time.Time
	for _, v := range m {
		if t := at(v); oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	var newest time.Time
	for _, v := range m {
		if t := at(v); t.After(newest) {
			newest = t
		}
	}
	cut := oldest.Add(newest.Sub(oldest) / 8)
	for k, v := range m {
		if !at(v).After(cut) {
			delete(m, k)
		}
	}
}
