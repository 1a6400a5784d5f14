package dataplane

import (
	"sync"
	"sync/atomic"
)

// Reason is why the router dropped a packet.
type Reason uint8

// Drop reasons; every drop is counted under exactly one.
const (
	ReasonMalformed        Reason = iota // not a valid IPv4 packet
	ReasonSpoofed                        // source is not the session's address or framed route
	ReasonPolicy                         // the identity's policy denies it
	ReasonSessionToSession               // session-to-session forwarding is off
	ReasonNoRoute                        // no session for the destination (from host)
	ReasonTTL                            // TTL expired
	ReasonTooBig                         // larger than the MTU with DF set (ICMP sent)
	ReasonHostDown                       // no host device, or its write failed
	ReasonSessionWrite                   // the session's WritePacket failed
	ReasonLocal                          // addressed to the gateway, not handled
	ReasonNotIPv4                        // neither IPv4 nor IPv6
	ReasonMalformed6                     // not a valid IPv6 packet (header, length, extension header chain)
	ReasonFragment6                      // an IPv6 fragment: not reassembled (PMTUD with Packet Too Big instead)
	numReasons
)

var reasonNames = [numReasons]string{"malformed", "spoofed", "policy", "session_to_session", "no_route", "ttl", "too_big", "host_down", "session_write", "local", "not_ipv4", "malformed_ipv6", "ipv6_fragment"}

// String names the reason as used in metrics.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists all drop reasons (for metrics).
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Stats are the router's counters.
type Stats struct {
	FromSessionPackets atomic.Uint64 // packets received from sessions
	FromHostPackets    atomic.Uint64 // packets received from the host
	ToHostPackets      atomic.Uint64 // forwarded to the host
	ToSessionPackets   atomic.Uint64 // forwarded to sessions
	MSSClamped         atomic.Uint64 // TCP SYNs whose MSS was lowered
	ICMPSent           atomic.Uint64 // ICMP errors generated
	ICMPRateLimited    atomic.Uint64 // ICMP errors suppressed by the rate limit
	Fragmented         atomic.Uint64 // packets split to fit a session MTU
	LocalHandled       atomic.Uint64 // packets to the gateway answered (DHCPINFORM)
	drops              [numReasons]atomic.Uint64
}

// Drops returns the drop counter for a reason.
func (s *Stats) Drops(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return s.drops[r].Load()
}

// Counters are per-identity traffic counters, as seen by the router: Rx is
// from the session (uplink), Tx is to the session (downlink).
type Counters struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
}

// identityCounters maps identity -> *Counters.
type identityCounters struct{ m sync.Map }

func (ic *identityCounters) get(identity string) *Counters {
	if c, ok := ic.m.Load(identity); ok {
		return c.(*Counters)
	}
	c, _ := ic.m.LoadOrStore(identity, new(Counters))
	return c.(*Counters)
}

func (ic *identityCounters) each(fn func(string, *Counters)) {
	ic.m.Range(func(k, v any) bool { fn(k.(string), v.(*Counters)); return true })
}
