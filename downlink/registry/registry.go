package registry

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sort"
	"sync"
)

// Registry holds the endpoints of one site. It is safe for concurrent use.
// Lookups are map reads under a read lock.
type Registry struct {
	path     string
	prefix   netip.Prefix
	prefix6  netip.Prefix // guarded by mu; IPv6 site prefix (addr6.go), zero if none
	reserved map[netip.Addr]bool

	mu     sync.RWMutex
	byName map[string]*Endpoint // guarded by mu; the other maps alias these
	byID   map[string]*Endpoint
	byCN   map[string]*Endpoint
	byAddr map[netip.Addr]*Endpoint
	// revoked holds the site CRL's serials (guarded by mu).
	revoked map[string]bool
}

// Open loads the registry from the state file at path (created on the first
// Add if missing; "" keeps the registry in memory only). prefix is the
// site's routed prefix; reserved addresses (e.g. the bridge's own) are never
// assigned. A state file written for another prefix is refused.
func Open(path string, prefix netip.Prefix, reserved ...netip.Addr) (*Registry, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	r := &Registry{path: path, prefix: prefix.Masked(), reserved: map[netip.Addr]bool{}}
	for _, a := range reserved {
		r.reserved[a] = true
	}
	r.reset()
	if path == "" {
		return r, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	s, err := ParseState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Prefix.Masked() != r.prefix {
		return nil, fmt.Errorf("%w: %s: prefix %s, configured %s", ErrBadState, path, s.Prefix, prefix)
	}
	for i := range s.Endpoints {
		r.index(&s.Endpoints[i])
	}
	return r, nil
}

func (r *Registry) reset() {
	r.byName = map[string]*Endpoint{}
	r.byID = map[string]*Endpoint{}
	r.byCN = map[string]*Endpoint{}
	r.byAddr = map[netip.Addr]*Endpoint{}
}

func (r *Registry) index(e *Endpoint) {
	r.byName[e.Name] = e
	r.byAddr[e.Addr] = e
	e.Addr6 = IPv6Addr(r.prefix, r.prefix6, e.Addr)
	if e.Addr6.IsValid() {
		r.byAddr[e.Addr6] = e
	}
	if e.PSKIdentity != "" {
		r.byID[e.PSKIdentity] = e
	}
	if e.CertCN != "" {
		r.byCN[e.CertCN] = e
	}
}

// Prefix returns the site prefix.
func (r *Registry) Prefix() netip.Prefix { return r.prefix }

// Add registers e. If e.Addr is unset, it gets the address whose host part
// is the name's trailing number (sensor-17 → .17) when that is free, else
// the next free address above it (wrapping). The state file is rewritten
// before Add returns. The stored endpoint is returned.
func (r *Registry) Add(e Endpoint) (Endpoint, error) {
	if err := e.validate(); err != nil {
		return Endpoint{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName[e.Name] != nil || (e.PSKIdentity != "" && r.byID[e.PSKIdentity] != nil) || (e.CertCN != "" && r.byCN[e.CertCN] != nil) {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrExists, e.Name)
	}
	if e.Addr.IsValid() {
		if !usable(r.prefix, e.Addr) || r.reserved[e.Addr] || r.byAddr[e.Addr] != nil {
			return Endpoint{}, fmt.Errorf("device: address %s not free in %s", e.Addr, r.prefix)
		}
	} else {
		a, err := r.pick(nameNumber(e.Name))
		if err != nil {
			return Endpoint{}, err
		}
		e.Addr = a
	}
	e.Allow = append([]string(nil), e.Allow...)
	e.PSK = append([]byte(nil), e.PSK...)
	stored := e
	r.index(&stored)
	if err := r.saveLocked(); err != nil {
		r.unindex(&stored)
		return Endpoint{}, err
	}
	return stored.clone(), nil
}

func (r *Registry) unindex(e *Endpoint) {
	delete(r.byName, e.Name)
	delete(r.byAddr, e.Addr)
	if e.Addr6.IsValid() {
		delete(r.byAddr, e.Addr6)
	}
	delete(r.byID, e.PSKIdentity)
	delete(r.byCN, e.CertCN)
}

// pick returns a free address, preferring host number n.
func (r *Registry) pick(n int) (netip.Addr, error) {
	size := uint64(1) << (32 - r.prefix.Bits())
	start := uint64(1)
	if n > 0 && uint64(n) < size {
		start = uint64(n)
	}
	base := r.prefix.Addr().As4()
	bv := uint64(base[0])<<24 | uint64(base[1])<<16 | uint64(base[2])<<8 | uint64(base[3])
	for i := uint64(0); i < size; i++ {
		h := (start + i) % size
		v := bv + h
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if usable(r.prefix, a) && !r.reserved[a] && r.byAddr[a] == nil {
			return a, nil
		}
	}
	return netip.Addr{}, ErrPrefixFull
}

// Remove deletes the endpoint called name and rewrites the state file.
func (r *Registry) Remove(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byName[name]
	if e == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	r.unindex(e)
	if err := r.saveLocked(); err != nil {
		r.index(e)
		return err
	}
	return nil
}

// Replace swaps the stored endpoint called e.Name for e (new credentials,
// protocol or allow-list; the address must stay) and rewrites the state
// file. It returns the stored endpoint.
func (r *Registry) Replace(e Endpoint) (Endpoint, error) {
	if err := e.validate(); err != nil {
		return Endpoint{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.byName[e.Name]
	if old == nil {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, e.Name)
	}
	if !e.Addr.IsValid() {
		e.Addr = old.Addr
	}
	if e.Addr != old.Addr {
		return Endpoint{}, fmt.Errorf("device: %q: address change %s → %s needs remove and add", e.Name, old.Addr, e.Addr)
	}
	if o := r.byID[e.PSKIdentity]; e.PSKIdentity != "" && o != nil && o != old {
		return Endpoint{}, fmt.Errorf("%w: PSK identity of %q", ErrExists, e.Name)
	}
	if o := r.byCN[e.CertCN]; e.CertCN != "" && o != nil && o != old {
		return Endpoint{}, fmt.Errorf("%w: certificate CN of %q", ErrExists, e.Name)
	}
	stored := e.clone()
	r.unindex(old)
	r.index(&stored)
	if err := r.saveLocked(); err != nil {
		r.unindex(&stored)
		r.index(old)
		return Endpoint{}, err
	}
	return stored.clone(), nil
}

// SameCredentials reports whether a and b authenticate the same way (PSK
// identity and key, certificate CN and serial, protocol).
func SameCredentials(a, b Endpoint) bool {
	return a.Protocol == b.Protocol && a.PSKIdentity == b.PSKIdentity && string(a.PSK) == string(b.PSK) &&
		a.CertCN == b.CertCN && a.CertSerial == b.CertSerial
}

// ByCert returns the endpoint a client certificate (already verified
// against the site CA) authenticates: its CN must name an endpoint whose
// recorded serial is this certificate's, and it must not be on the site
// CRL (SetRevoked). The error says why not (ErrNotFound, ErrCertReplaced,
// ErrCertRevoked).
func (r *Registry) ByCert(c *x509.Certificate) (Endpoint, error) {
	serial := SerialHex(c)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.revoked[serial] {
		return Endpoint{}, fmt.Errorf("%w: serial %s (CN %q)", ErrCertRevoked, serial, c.Subject.CommonName)
	}
	e := r.byCN[c.Subject.CommonName]
	if e == nil {
		return Endpoint{}, fmt.Errorf("%w: certificate CN %q", ErrNotFound, c.Subject.CommonName)
	}
	if e.CertSerial != "" && e.CertSerial != serial {
		return Endpoint{}, fmt.Errorf("%w: %q presented serial %s, the endpoint's certificate is %s", ErrCertReplaced, e.Name, serial, e.CertSerial)
	}
	return e.clone(), nil
}

// SetRevoked replaces the set of revoked certificate serials (lowercase
// hex, as SerialHex; from the site CRL): ByCert refuses them.
func (r *Registry) SetRevoked(serials []string) {
	m := make(map[string]bool, len(serials))
	for _, s := range serials {
		m[s] = true
	}
	r.mu.Lock()
	r.revoked = m
	r.mu.Unlock()
}

// SerialHex is a certificate's serial number as the registry records it.
func SerialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

func (e *Endpoint) clone() Endpoint {
	c := *e
	c.Allow = append([]string(nil), e.Allow...)
	c.PSK = append([]byte(nil), e.PSK...)
	return c
}

func (r *Registry) lookup(m map[string]*Endpoint, k string) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := m[k]; e != nil {
		return e.clone(), true
	}
	return Endpoint{}, false
}

// ByName returns the endpoint called name.
func (r *Registry) ByName(name string) (Endpoint, bool) { return r.lookup(r.byName, name) }

// ByPSKIdentity returns the endpoint owning a PSK identity.
func (r *Registry) ByPSKIdentity(id string) (Endpoint, bool) { return r.lookup(r.byID, id) }

// ByCN returns the endpoint owning a certificate common name.
func (r *Registry) ByCN(cn string) (Endpoint, bool) { return r.lookup(r.byCN, cn) }

// ByAddr returns the endpoint holding address a (its IPv4 address, or
// its IPv6 one when the registry has an IPv6 prefix).
func (r *Registry) ByAddr(a netip.Addr) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byAddr[a]; e != nil {
		return e.clone(), true
	}
	return Endpoint{}, false
}

// PSK returns the key for a PSK identity without copying the whole
// endpoint (the DTLS handshake's hot path). ok is false for an unknown
// identity.
func (r *Registry) PSK(id string) (key []byte, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byID[id]; e != nil {
		return append([]byte(nil), e.PSK...), true
	}
	return nil, false
}

// List returns all endpoints sorted by address.
func (r *Registry) List() []Endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Endpoint, 0, len(r.byName))
	for _, e := range r.byName {
		out = append(out, e.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// Len returns the number of endpoints.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byName)
}

func (r *Registry) saveLocked() error {
	if r.path == "" {
		return nil
	}
	s := &State{Version: stateVersion, Prefix: r.prefix, Endpoints: make([]Endpoint, 0, len(r.byName))}
	for _, e := range r.byName {
		c := *e
		c.Addr6 = netip.Addr{} // derived (addr6.go), not state
		s.Endpoints = append(s.Endpoints, c)
	}
	sort.Slice(s.Endpoints, func(i, j int) bool { return s.Endpoints[i].Addr.Less(s.Endpoints[j].Addr) })
	b, err := MarshalState(s)
	if err != nil {
		return err
	}
	return writeFileAtomic(r.path, b)
}
