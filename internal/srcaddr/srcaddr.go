// Package srcaddr maps a peer's address to the key per-source limits count
// it under. An IPv4 address is itself (v4-mapped ones unmapped). An IPv6
// address is its /64: one subscriber, site or host usually holds a whole
// /64 (RFC 6177, SLAAC, privacy addresses), so per-address buckets would
// give one attacker 2^64 of them; per /64 they get one, like one IPv4
// address.
package srcaddr

import "net/netip"

// Key is the per-source accounting key of a.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
