package ike

import (
	"fmt"
	"net/netip"
)

// EventKind names an Event.
type EventKind uint8

const (
	// EventIKEUp: phase 1 established.
	EventIKEUp EventKind = iota + 1
	// EventIKEDown: phase 1 deleted, expired, failed or peer dead. After a
	// phase 1 rekey the old SA goes down too (Err nil on the side that
	// rekeyed, the peer's Delete on the other); its children have moved to
	// the new SA and stay installed: no EventChildDown is sent for them.
	EventIKEDown
	// EventChildUp: install Child (both directions).
	EventChildUp
	// EventChildRekeyed: install Child; Old stays for inbound until a
	// later EventChildDown for it (grace period).
	EventChildRekeyed
	// EventChildDown: remove Child.
	EventChildDown
	// EventChildFailed: a Quick Mode we started failed (Err says why:
	// timeout or the peer's notify); Child is nil. A rekey that fails
	// leaves the old child in place until it expires.
	EventChildFailed
	// EventChildInbound: a Quick Mode message that lets the peer send on
	// Child.InSPI is on its way — as responder our HASH(2) (the initiator
	// may send before its HASH(3) arrives), as initiator our HASH(3) (the
	// responder switches when it arrives). It is delivered before that
	// message is sent: install the inbound SA now to lose nothing; the
	// same *ChildSA then comes with EventChildUp or EventChildRekeyed (use
	// it outbound from then on), or with EventChildDown if the exchange
	// fails.
	EventChildInbound
	// EventAuthFailed (responder only): a peer's phase 1 failed to
	// authenticate (wrong key, signature or certificate, a key not bound to
	// the ID presented, or an identity the policy refuses); Remote is its
	// address, Peer what it claimed when that could be read, Err why.
	// The composition uses it for failure backoff.
	EventAuthFailed
)

// String names the event kind.
func (k EventKind) String() string {
	names := [...]string{"?", "ike-up", "ike-down", "child-up", "child-rekeyed", "child-down", "child-failed", "child-inbound", "auth-failed"}
	if int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("event%d", uint8(k))
}

// Event reports an SA change to the composition (ESP install/remove).
type Event struct {
	Kind   EventKind
	Remote netip.AddrPort
	Peer   Identity
	Child  *ChildSA
	Old    *ChildSA
	Err    error // why, for Down events and failed handshakes
}
