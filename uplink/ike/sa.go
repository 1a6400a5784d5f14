package ike

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"log/slog"
	"net/netip"
	"time"
)

// p1State is the Main Mode state of an ISAKMP SA (RFC 2409 §5):
//
//	Initiator                          Responder
//	p1MM1Sent  --- HDR, SA ----------->            (p1MM2Sent after reply)
//	           <-- HDR, SA ------------ p1MM2Sent
//	p1MM3Sent  --- HDR, KE, Ni, NAT-D ->
//	           <-- HDR, KE, Nr, NAT-D - p1MM4Sent
//	p1MM5Sent  --- HDR*, IDii, AUTH --->           (float to NAT-T port here)
//	           <-- HDR*, IDir, AUTH --- p1Established
//	p1Established
type p1State uint8

const (
	p1MM1Sent     p1State = iota + 1 // initiator: waiting for the responder's SA
	p1MM2Sent                        // responder: waiting for KE/nonce
	p1MM3Sent                        // initiator: waiting for KE/nonce
	p1MM4Sent                        // responder: waiting for the encrypted ID/auth
	p1MM5Sent                        // initiator: waiting for the encrypted ID/auth
	p1Established                    // keys and peer identity known
	p1Dead                           // torn down
)

// natVersion is which NAT-T flavour the peer announced.
type natVersion uint8

const (
	natNone natVersion = iota
	natDraft
	natRFC
)

// ikeSA is one ISAKMP SA and its Quick Mode exchanges. All fields are
// owned by the engine's lock.
type ikeSA struct {
	e     *Engine
	log   *slog.Logger
	role  Role
	state p1State

	ci, cr        [8]byte
	local, remote netip.AddrPort
	natt          bool // talking on the NAT-T port
	nat           natVersion
	natLocal      bool   // we are behind a NAT (or pretend to be)
	natRemote     bool   // the peer is behind a NAT
	peerSeesUs    []byte // the peer's NAT-D hash of our address (responder)
	peerDPD       bool
	peerKind      peerid.Kind // implementation named by the peer's vendor IDs

	prop   IKEProposal
	auth   AuthMethod
	life   time.Duration
	saBody []byte // SAi_b: the initiator's SA payload body

	dh       *dhKey
	gxi, gxr []byte
	ni, nr   []byte
	gxy      []byte
	keys     phase1Keys
	blk      cipher.Block
	iv       []byte // phase 1 CBC chain; after MM6, the last phase 1 block
	psk      []byte
	peer     Identity
	peerCR   bool // the peer sent CERTREQ

	lastSent     []byte
	lastRecv     [32]byte
	retryAt      time.Time
	retries      int
	rto          time.Duration
	created      time.Time
	established  time.Time
	expires      time.Time
	lastHeard    time.Time
	dpdSeq       uint32
	dpdPending   bool
	dpdSentAt    time.Time
	dpdFirstSent time.Time

	qms      map[uint32]*quickMode
	children []*ChildSA
	replaces *ikeSA     // initiator: the SA this one rekeys
	rekeying bool       // a replacement is under way
	wantL2TP bool       // initiator: bring up the L2TP child after phase 1
	counted  netip.Addr // responder: the address it counts against in Engine.perSource
	busy     bool       // responder: key-exchange work for the last message is running off the lock (offload.go)
}

func cookieKey(ci, cr [8]byte) [16]byte {
	var k [16]byte
	copy(k[:8], ci[:])
	copy(k[8:], cr[:])
	return k
}

func (e *Engine) newSA(role Role, local, remote netip.AddrPort, natt bool) *ikeSA {
	now := e.cfg.Clock.Now()
	sa := &ikeSA{e: e, role: role, local: local, remote: remote, natt: natt, created: now, lastHeard: now,
		rto: e.cfg.Retransmit, qms: map[uint32]*quickMode{}}
	return sa
}

func (sa *ikeSA) setLog() {
	sa.log = sa.e.log.With("peer", sa.remote, "icookie", fmt.Sprintf("%x", sa.ci), "rcookie", fmt.Sprintf("%x", sa.cr), "role", sa.role)
}

// input dispatches a datagram to its SA (RFC 2408 §3.1 cookies).
func (e *Engine) input(b []byte, local, remote netip.AddrPort, natt bool) {
	m, err := ParseMessage(b)
	if err != nil {
		e.stats.Malformed.Add(1)
		e.warn("malformed ISAKMP message", "peer", remote, "err", err)
		return
	}
	h := m.Header
	var zero [8]byte
	sa := e.sas[cookieKey(h.ICookie, h.RCookie)]
	if sa == nil {
		switch {
		case h.RCookie == zero && h.Exchange == ExchangeIdentityProtection && m.Encrypted == nil:
			e.respondMM1(m, b, local, remote, natt)
			return
		case h.Exchange == ExchangeIdentityProtection && m.Encrypted == nil && e.half.get(h.ICookie, h.RCookie) != nil:
			if ho := e.half.get(h.ICookie, h.RCookie); remote.Addr() == ho.remote.Addr() {
				e.respondMM3(ho, m, b, local, remote, natt)
			} else {
				e.stats.Unmatched.Add(1)
			}
			return
		case h.Exchange == ExchangeIdentityProtection && e.pending[h.ICookie] == nil && e.cookieValid(remote, h.ICookie, h.RCookie):
			// Our cookie, but the half-open state is gone: evicted by a
			// flood or expired. The initiator will time out and start over.
			e.stats.HalfOpenLost.Add(1)
			e.warn("Main Mode with a valid cookie but no half-open state (evicted or expired)", "peer", remote)
			return
		case e.pending[h.ICookie] != nil && e.pending[h.ICookie].role == RoleInitiator &&
			e.pending[h.ICookie].cr == zero && h.RCookie != zero && m.Encrypted == nil:
			sa = e.pending[h.ICookie]
			if h.Exchange == ExchangeIdentityProtection {
				sa.cr = h.RCookie
				e.sas[cookieKey(sa.ci, sa.cr)] = sa
				sa.setLog()
			}
		default:
			e.stats.Unmatched.Add(1)
			e.log.Debug("no SA for message", "peer", remote, "icookie", fmt.Sprintf("%x", h.ICookie), "rcookie", fmt.Sprintf("%x", h.RCookie))
			return
		}
	}
	sa.receive(m, b, local, remote, natt)
}

// receive handles one message for the SA: duplicates are answered with our
// last message (RFC 2408 §5 leaves retransmission policy to us).
func (sa *ikeSA) receive(m *Message, b []byte, local, remote netip.AddrPort, natt bool) {
	if sa.state == p1Dead {
		return
	}
	sum := sha256.Sum256(b[:m.Header.Length])
	if sa.busy {
		// The answer to lastRecv is being computed (offload.go): a
		// retransmission of it waits for that answer, anything else
		// cannot be processed in the SA's current state.
		if sum == sa.lastRecv {
			sa.e.stats.Duplicates.Add(1)
		} else {
			sa.e.stats.Unmatched.Add(1)
		}
		return
	}
	if sum == sa.lastRecv && m.Header.Exchange == ExchangeIdentityProtection {
		sa.e.stats.Duplicates.Add(1)
		if sa.lastSent != nil {
			sa.e.send(sa.lastSent, sa.local, sa.remote, sa.natt)
		}
		return
	}
	var err error
	switch m.Header.Exchange {
	case ExchangeIdentityProtection:
		if remote.Addr() != sa.remote.Addr() {
			sa.e.stats.Unmatched.Add(1)
			return
		}
		err = sa.mainMode(m, sum, local, remote, natt)
	case ExchangeQuickMode:
		err = sa.quickModeInput(m, b, local, remote, natt)
	case ExchangeInformational:
		err = sa.informationalInput(m, local, remote, natt)
	default:
		sa.e.stats.Malformed.Add(1)
		sa.e.warn("unsupported exchange type", "peer", remote, "msg_type", m.Header.Exchange)
		return
	}
	if err != nil {
		sa.fail(err)
	}
}

// float records the peer's current address: after NAT-T detection the
// initiator moves to port 4500, and a NAT may change its mapping (RFC 3947 §4).
func (sa *ikeSA) float(local, remote netip.AddrPort, natt bool) {
	if natt && !sa.natt {
		sa.log.Debug("floated to NAT-T port", "local", local, "remote", remote)
	}
	if natt {
		sa.natt = true
	}
	sa.local, sa.remote = local, remote
}

// transmit sends b as the SA's new last message and arms retransmission.
func (sa *ikeSA) transmit(b []byte) {
	sa.lastSent = b
	sa.retries = 0
	sa.rto = sa.e.cfg.Retransmit
	sa.retryAt = sa.e.cfg.Clock.Now().Add(sa.rto)
	sa.e.send(b, sa.local, sa.remote, sa.natt)
}

func (sa *ikeSA) header(ex Exchange, mid uint32, flags uint8) Header {
	return Header{ICookie: sa.ci, RCookie: sa.cr, Exchange: ex, MessageID: mid, Flags: flags}
}

// establish finishes phase 1.
func (sa *ikeSA) establish() {
	e := sa.e
	now := e.cfg.Clock.Now()
	if sa.role == RoleResponder {
		e.nHalf--
	}
	sa.state = p1Established
	sa.established = now
	sa.expires = now.Add(sa.life)
	sa.lastHeard = now
	delete(e.pending, sa.ci)
	e.stats.Phase1Established.Add(1)
	kind := sa.peerKind
	if kind == "" {
		kind = peerid.Unknown
	}
	e.stats.Phase1ByPeer.Add(kind)
	sa.log.Info("phase 1 established", "proposal", sa.prop.String(), "auth", sa.auth, "nat", sa.behindNAT(), "natt", sa.natt, "peer_impl", kind)
	e.emit(Event{Kind: EventIKEUp, Remote: sa.remote, Peer: sa.peer})
	if old := sa.replaces; old != nil {
		// Make-before-break: children move to the new SA, then the old one
		// is deleted.
		sa.children = append(sa.children, old.children...)
		old.children = nil
		old.teardown(nil, true)
		e.stats.Rekeys.Add(1)
		sa.replaces = nil
	}
	if sa.wantL2TP {
		sa.wantL2TP = false
		if err := sa.startQuickMode(nil); err != nil {
			sa.log.Warn("quick mode not started", "err", err)
		}
	}
}

// fail ends a handshake or SA because of err, telling the peer when
// notifyFor says so.
func (sa *ikeSA) fail(err error) {
	e := sa.e
	if errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrInvalidCert) || errors.Is(err, ErrInvalidID) {
		e.stats.AuthFailures.Add(1)
		if sa.role == RoleResponder && sa.state != p1Established {
			e.emit(Event{Kind: EventAuthFailed, Remote: sa.remote, Peer: sa.peer, Err: err})
		}
	}
	if errors.Is(err, ErrNoProposalChosen) {
		if sa.state == p1Established {
			e.stats.QuickNoProposal.Add(1) // a Quick Mode's refusal: its own phase in metrics
		} else {
			e.stats.NoProposalChosen.Add(1)
		}
	}
	var pe *ParseError
	if errors.As(err, &pe) {
		e.stats.Malformed.Add(1)
	}
	if sa.state == p1Established {
		// A failed Quick Mode or informational does not kill phase 1.
		e.warn("exchange failed", "peer", sa.remote, "err", err)
		return
	}
	e.stats.Phase1Failed.Add(1)
	e.warn("phase 1 failed", "peer", sa.remote, "role", sa.role, "err", err)
	var fromPeer *NotifyError
	if t, ok := notifyFor(err); ok && !errors.As(err, &fromPeer) {
		sa.sendPlainNotify(t)
	}
	sa.teardown(err, false)
}

// sendPlainNotify sends an unencrypted informational notify, used before
// phase 1 keys are shared (RFC 2408 §5.5: no authentication is possible).
func (sa *ikeSA) sendPlainNotify(t NotifyType) {
	n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: t, SPI: append(sa.ci[:], sa.cr[:]...)}
	b := AppendMessage(nil, sa.header(ExchangeInformational, 0, 0), []Payload{{PayloadNotify, n.Append(nil)}})
	sa.e.stats.NotifiesSent.Add(1)
	sa.e.send(b, sa.local, sa.remote, sa.natt)
}

// plainNotify turns an error notify received during Main Mode into an error.
func (sa *ikeSA) plainNotify(p Payload) error {
	n, err := ParseNotify(p.Body)
	if err != nil {
		return err
	}
	sa.e.stats.NotifiesReceived.Add(1)
	return &NotifyError{Type: n.Type, Err: ErrPeerNotify}
}

// teardown removes the SA; with sendDelete the peer is told (RFC 2408 §3.15).
// Children are moved to another established SA with the same peer if there
// is one (IKEv1 IPsec SAs outlive their ISAKMP SA), otherwise removed.
func (sa *ikeSA) teardown(err error, sendDelete bool) {
	e := sa.e
	if sa.state == p1Dead {
		return
	}
	if sendDelete && sa.state == p1Established {
		for _, c := range sa.children {
			sa.sendDeleteESP(c)
		}
		d := Delete{DOI: DOIIPsec, Protocol: ProtoISAKMP, SPIs: [][]byte{append(sa.ci[:], sa.cr[:]...)}}
		sa.sendInformational([]Payload{{PayloadDelete, d.Append(nil)}})
		for _, c := range sa.children {
			e.emit(Event{Kind: EventChildDown, Remote: sa.remote, Peer: sa.peer, Child: c, Err: err})
		}
		sa.children = nil
	}
	if len(sa.children) > 0 {
		if heir := e.heir(sa); heir != nil {
			heir.children = append(heir.children, sa.children...)
		} else {
			for _, c := range sa.children {
				e.emit(Event{Kind: EventChildDown, Remote: sa.remote, Peer: sa.peer, Child: c, Err: err})
			}
		}
		sa.children = nil
	}
	wasUp := sa.state == p1Established
	if sa.role == RoleResponder && !wasUp {
		e.nHalf--
	}
	sa.state = p1Dead
	if a := sa.counted; a.IsValid() {
		if e.perSource[a]--; e.perSource[a] <= 0 {
			delete(e.perSource, a)
		}
	}
	delete(e.sas, cookieKey(sa.ci, sa.cr))
	if e.pending[sa.ci] == sa {
		delete(e.pending, sa.ci)
	}
	if wasUp || sa.role == RoleInitiator {
		e.emit(Event{Kind: EventIKEDown, Remote: sa.remote, Peer: sa.peer, Err: err})
	}
	sa.log.Info("phase 1 closed", "duration", e.cfg.Clock.Now().Sub(sa.created), "reason", err)
}

// heir finds another established SA with the same peer.
func (e *Engine) heir(sa *ikeSA) *ikeSA {
	var best *ikeSA
	for _, o := range e.sas {
		if o != sa && o.state == p1Established && o.remote.Addr() == sa.remote.Addr() && bytes.Equal(o.peer.ID.Data, sa.peer.ID.Data) {
			if best == nil || o.established.After(best.established) {
				best = o
			}
		}
	}
	return best
}

// initialContact deletes older SAs of the same peer identity (RFC 2407
// §4.6.3.3): the peer rebooted and has forgotten them. Address identities
// must also come from the same public address: two sites behind different
// NATs often present the same private address as their ID.
func (e *Engine) initialContact(sa *ikeSA) {
	for _, o := range e.allSAs() {
		sameAddr := o.remote.Addr() == sa.remote.Addr()
		if _, isAddr := sa.peer.ID.Addr(); isAddr && !sameAddr {
			continue
		}
		if o != sa && o.state == p1Established && o.peer.ID.Type == sa.peer.ID.Type && bytes.Equal(o.peer.ID.Data, sa.peer.ID.Data) {
			o.log.Info("INITIAL-CONTACT from peer: removing old SA")
			children := o.children
			o.children = nil
			for _, c := range children {
				e.emit(Event{Kind: EventChildDown, Remote: o.remote, Peer: o.peer, Child: c, Err: errors.New("ike: peer sent INITIAL-CONTACT")})
			}
			o.teardown(errors.New("ike: peer sent INITIAL-CONTACT"), false)
		}
	}
}

// boundIdentity reports whether sa's peer authenticated with credentials
// bound to its ID (Config.BoundIdentity).
func (e *Engine) boundIdentity(sa *ikeSA) bool {
	if f := e.cfg.BoundIdentity; f != nil {
		return f(sa.peer)
	}
	if sa.peer.Cert != nil {
		return true
	}
	_, isAddr := sa.peer.ID.Addr()
	return isAddr
}

// samePeerSA returns another established SA of sa's peer (same identity
// and public address), or nil.
func (e *Engine) samePeerSA(sa *ikeSA) *ikeSA {
	for _, o := range e.allSAs() {
		if o != sa && o.state == p1Established && o.remote.Addr() == sa.remote.Addr() &&
			o.peer.ID.Type == sa.peer.ID.Type && bytes.Equal(o.peer.ID.Data, sa.peer.ID.Data) {
			return o
		}
	}
	return nil
}

// tick runs the SA's timers.
func (sa *ikeSA) tick(now time.Time) {
	e := sa.e
	if sa.state == p1Dead {
		return
	}
	if sa.state != p1Established {
		if sa.role == RoleResponder && now.Sub(sa.created) > e.cfg.HalfOpenTTL {
			sa.teardown(ErrTimeout, false)
			return
		}
		if sa.busy {
			// Our answer to the peer's last message is being computed
			// (offload.go): resending our previous one would only make
			// the peer resend what we are working on.
			return
		}
		if !sa.retryAt.IsZero() && !now.Before(sa.retryAt) {
			if sa.retries >= e.cfg.Retries {
				e.stats.Phase1Failed.Add(1)
				sa.teardown(ErrTimeout, false)
				return
			}
			sa.retries++
			sa.rto = min(sa.rto*2, retransmitCap)
			sa.retryAt = now.Add(sa.rto)
			e.stats.Retransmits.Add(1)
			e.send(sa.lastSent, sa.local, sa.remote, sa.natt)
		}
		return
	}
	for _, q := range sa.qms {
		q.tick(sa, now)
	}
	sa.tickChildren(now)
	if sa.state == p1Dead {
		return
	}
	if !now.Before(sa.expires) {
		sa.teardown(errors.New("ike: phase 1 lifetime expired"), true)
		return
	}
	margin := min(e.cfg.RekeyMargin, sa.life/2)
	if sa.role == RoleInitiator && !sa.rekeying && !now.Before(sa.expires.Add(-margin)) {
		sa.rekeying = true
		sa.log.Info("rekeying phase 1")
		if _, err := e.startMainMode(sa.local, sa.remote, sa); err != nil {
			sa.log.Warn("phase 1 rekey not started", "err", err)
		}
	}
	sa.tickDPD(now)
}
