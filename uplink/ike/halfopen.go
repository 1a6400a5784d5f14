package ike

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/internal/srcaddr"
)

// Cheap until the peer proves its address (RFC 2408 §2.5.3, issue 18).
//
// A first Main Mode message costs the responder a parse, an HMAC and one
// reply: no Diffie-Hellman, no goroutine, no timer, no retransmission. The
// responder cookie is HMAC-SHA256(secret, initiator address, port and
// cookie), so only a peer that receives our reply at the address it claims
// can send a third message carrying it. Until that third message the
// responder keeps only a halfOpen entry (the initiator's SA payload, the
// chosen proposal and our reply: a few hundred bytes) in a table sized for
// a flood; when it is full, the oldest entry is evicted, never the newest
// refused, so a peer that answers within (table size ÷ flood rate) seconds
// completes while spoofed entries age out. The third message is where the
// work starts: Config.Admit and the per-source bucket are asked then (a
// spoofed source cannot spend another's tokens), and the entry becomes an
// ikeSA, bounded separately by MaxNegotiating.

// halfOpen is a responder's state between MM2 and MM3.
type halfOpen struct {
	ci, cr        [8]byte
	local, remote netip.AddrPort
	natt          bool
	nat           natVersion
	peerDPD       bool
	peerKind      peerid.Kind
	prop          IKEProposal
	auth          AuthMethod
	life          time.Duration
	psk           []byte   // aliases the configured key
	saBody        []byte   // SAi_b, needed for HASH_I/HASH_R (RFC 2409 §5)
	mm2           []byte   // our reply, resent when the initiator resends MM1
	mm1           [32]byte // SHA-256 of MM1, to recognise its retransmission
	created       time.Time
	elem          *list.Element
}

// halfOpenTable holds halfOpen entries by cookie pair, oldest first.
type halfOpenTable struct {
	byKey map[[16]byte]*halfOpen
	age   list.List // of *halfOpen, oldest at the front
}

func (t *halfOpenTable) len() int { return len(t.byKey) }

func (t *halfOpenTable) get(ci, cr [8]byte) *halfOpen { return t.byKey[cookieKey(ci, cr)] }

func (t *halfOpenTable) add(h *halfOpen) {
	if t.byKey == nil {
		t.byKey = map[[16]byte]*halfOpen{}
	}
	t.byKey[cookieKey(h.ci, h.cr)] = h
	h.elem = t.age.PushBack(h)
}

func (t *halfOpenTable) remove(h *halfOpen) {
	delete(t.byKey, cookieKey(h.ci, h.cr))
	t.age.Remove(h.elem)
}

// oldest returns the oldest entry, or nil.
func (t *halfOpenTable) oldest() *halfOpen {
	if f := t.age.Front(); f != nil {
		return f.Value.(*halfOpen)
	}
	return nil
}

// cookieSecret is the key of the responder cookie HMAC; it changes every
// cookieRotate, and the previous one still verifies (RFC 2408 §2.5.3).
type cookieSecret struct {
	cur, prev [32]byte
	next      time.Time
}

// responderCookie derives our cookie for an initiator (RFC 2408 §2.5.3:
// a hash of the peer's address and port, its cookie and a local secret).
func responderCookie(secret *[32]byte, remote netip.AddrPort, ci [8]byte) [8]byte {
	m := hmac.New(sha256.New, secret[:])
	a := remote.Addr().As16()
	m.Write(a[:])
	m.Write(binary.BigEndian.AppendUint16(nil, remote.Port()))
	m.Write(ci[:])
	var cr [8]byte
	copy(cr[:], m.Sum(nil))
	return cr
}

// cookieFor returns the responder cookie for remote and ci with the
// current secret, rotating it when due.
func (e *Engine) cookieFor(remote netip.AddrPort, ci [8]byte) [8]byte {
	now := e.cfg.Clock.Now()
	s := &e.secret
	if s.next.IsZero() || !now.Before(s.next) {
		s.prev = s.cur
		copy(s.cur[:], e.random(len(s.cur)))
		if s.next.IsZero() {
			s.prev = s.cur
		}
		s.next = now.Add(cookieRotate)
	}
	return responderCookie(&s.cur, remote, ci)
}

// cookieValid reports whether cr is a cookie we gave remote for ci.
func (e *Engine) cookieValid(remote netip.AddrPort, ci, cr [8]byte) bool {
	for _, k := range []*[32]byte{&e.secret.cur, &e.secret.prev} {
		if want := responderCookie(k, remote, ci); hmac.Equal(want[:], cr[:]) {
			return true
		}
	}
	return false
}

// respondMM1 answers a new Main Mode (responder side, RFC 2409 §5) without
// doing any work a spoofed source could make expensive: a duplicate is
// answered with the same reply, a new one gets a proposal choice, a
// stateless cookie and a halfOpen entry (evicting the oldest when the
// table is full).
func (e *Engine) respondMM1(m *Message, b []byte, local, remote netip.AddrPort, natt bool) {
	sum := sha256.Sum256(b[:m.Header.Length])
	ci := m.Header.ICookie
	cr := e.cookieFor(remote, ci)
	if h := e.half.get(ci, cr); h != nil {
		if h.mm1 == sum && h.remote == remote {
			e.stats.Duplicates.Add(1)
			e.send(h.mm2, h.local, h.remote, h.natt)
		} else {
			e.stats.Unmatched.Add(1)
		}
		return
	}
	if e.sas[cookieKey(ci, cr)] != nil {
		// MM3 already promoted this exchange: a late MM1 copy.
		e.stats.Unmatched.Add(1)
		return
	}
	sap, ok := m.Find(PayloadSA)
	if !ok {
		e.stats.Malformed.Add(1)
		e.warn("first Main Mode message without an SA payload", "peer", remote)
		return
	}
	sai, err := ParseSA(sap.Body)
	if err != nil {
		e.stats.Malformed.Add(1)
		e.warn("malformed SA payload", "peer", remote, "err", err)
		return
	}
	// A scratch SA lets the proposal choice and the vendor ID scan run as
	// for every other exchange; it is not kept.
	sa := e.newSA(RoleResponder, local, remote, natt)
	sa.ci, sa.cr = ci, cr
	sa.log = e.log
	chosen, err := e.choosePhase1(sa, sai)
	if err != nil {
		e.stats.NoProposalChosen.Add(1)
		if np := (*NoProposalError)(nil); errors.As(err, &np) && len(np.Offered) > 0 {
			e.logRefusal(remote, np)
		} else {
			e.warn("phase 1 rejected", "peer", remote, "reason", err)
		}
		sa.sendPlainNotify(NotifyNoProposalChosen)
		return
	}
	sa.vendorIDs(m)
	reply := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{chosen}}
	ps := append([]Payload{{PayloadSA, reply.Append(nil)}}, sa.ourVIDs()...)
	h := &halfOpen{
		ci: ci, cr: cr, local: local, remote: remote, natt: natt, nat: sa.nat, peerDPD: sa.peerDPD, peerKind: sa.peerKind,
		prop: sa.prop, auth: sa.auth, life: sa.life, psk: sa.psk, saBody: append([]byte{}, sap.Body...),
		mm2: AppendMessage(nil, sa.header(ExchangeIdentityProtection, 0, 0), ps), mm1: sum, created: e.cfg.Clock.Now(),
	}
	for e.half.len() >= e.cfg.MaxHalfOpen {
		e.half.remove(e.half.oldest())
		e.stats.HalfOpenEvicted.Add(1)
		e.warn("half-open table full: oldest half-open Main Mode evicted", "peer", remote)
	}
	e.half.add(h)
	e.send(h.mm2, local, remote, natt)
}

// respondMM3 takes the third Main Mode message for a halfOpen entry: the
// peer has proven its address. Admission (Config.Admit, the per-source
// bucket) and the negotiating bound apply here, before any Diffie-Hellman
// work; a refused MM3 is dropped and its entry kept, so the initiator's
// retransmission may be admitted later. An admitted one becomes an ikeSA.
func (e *Engine) respondMM3(h *halfOpen, m *Message, b []byte, local, remote netip.AddrPort, natt bool) {
	if e.perSource[srcaddr.Key(remote.Addr())] >= e.cfg.MaxSAsPerSource { // an IPv6 peer counts as its /64
		e.stats.SourceSALimited.Add(1)
		e.warn("ISAKMP SA limit per source reached, dropping Main Mode", "peer", remote)
		return
	}
	if e.nHalf >= e.cfg.MaxNegotiating {
		e.stats.HalfOpenDropped.Add(1)
		e.warn("negotiating limit reached, dropping Main Mode", "peer", remote)
		return
	}
	if !e.allow(remote.Addr()) || (e.cfg.Admit != nil && !e.cfg.Admit(remote.Addr())) {
		e.stats.RateLimited.Add(1)
		e.warn("admission refused a proven Main Mode", "peer", remote)
		return
	}
	e.half.remove(h)
	sa := e.newSA(RoleResponder, h.local, h.remote, h.natt)
	sa.created = h.created
	sa.ci, sa.cr = h.ci, h.cr
	sa.setLog()
	sa.nat, sa.peerDPD, sa.peerKind = h.nat, h.peerDPD, h.peerKind
	sa.prop, sa.auth, sa.life, sa.psk, sa.saBody = h.prop, h.auth, h.life, h.psk, h.saBody
	sa.lastSent, sa.lastRecv = h.mm2, h.mm1
	sa.state = p1MM2Sent
	sa.counted = srcaddr.Key(sa.remote.Addr())
	e.perSource[sa.counted]++
	e.nHalf++
	e.sas[cookieKey(sa.ci, sa.cr)] = sa
	sa.receive(m, b, local, remote, natt)
}

// tickHalfOpen expires halfOpen entries older than HalfOpenTTL.
func (e *Engine) tickHalfOpen(now time.Time) {
	for h := e.half.oldest(); h != nil && now.Sub(h.created) > e.cfg.HalfOpenTTL; h = e.half.oldest() {
		e.half.remove(h)
		e.stats.HalfOpenExpired.Add(1)
	}
}
