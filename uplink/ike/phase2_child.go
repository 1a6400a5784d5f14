package ike

import (
	"fmt"
	"net/netip"
	"time"
)

// buildChild derives KEYMAT (RFC 2409 §5.5) and assembles the SA pair.
func (sa *ikeSA) buildChild(q *quickMode) *ChildSA {
	e := sa.e
	suite := q.chosen.prop.Suite
	n := suite.KeymatLen()
	life := e.cfg.IPsecLifetime
	if q.chosen.life > 0 && q.chosen.life < life {
		life = q.chosen.life
	}
	kb := e.cfg.IPsecLifeKB
	if q.chosen.lifeKB > 0 && (kb == 0 || q.chosen.lifeKB < kb) {
		kb = q.chosen.lifeKB
	}
	now := e.cfg.Clock.Now()
	c := &ChildSA{
		Suite: suite, InSPI: q.inSPI, OutSPI: q.outSPI,
		InKey:  keymat(sa.prop.Hash, sa.keys.d, q.gqm, ProtoESP, q.inSPI, q.ni, q.nr, n),
		OutKey: keymat(sa.prop.Hash, sa.keys.d, q.gqm, ProtoESP, q.outSPI, q.ni, q.nr, n),
		Local:  sa.local, Remote: sa.remote, Encap: q.chosen.encap != encapTransport,
		Lifetime: life, LifeKB: kb, Peer: sa.peer, PeerKind: sa.peerKind, Established: now, PFS: q.chosen.prop.PFS,
		ikeCookies: cookieKey(sa.ci, sa.cr), expires: now.Add(life),
	}
	c.Role = RoleResponder
	if q.initiator {
		c.Role = RoleInitiator
		c.NATOALocal, c.NATOARemote = q.natoaI, q.natoaR
	} else {
		c.NATOALocal, c.NATOARemote = q.natoaR, q.natoaI
	}
	c.Selectors = selectorsFrom(q, sa)
	return c
}

// childUp reports the SA pair of a finished Quick Mode.
func (sa *ikeSA) childUp(q *quickMode) {
	e := sa.e
	c := q.child
	if c == nil {
		c = sa.buildChild(q)
	}
	now := e.cfg.Clock.Now()
	c.Established, c.expires = now, now.Add(c.Lifetime)
	suite := c.Suite
	old := q.rekeyOf
	if old == nil {
		// A peer-initiated Quick Mode with the same selectors is a rekey
		// from its side.
		for _, o := range sa.children {
			if o.Selectors == c.Selectors && !o.rekeyStarted {
				old = o
				old.rekeyStarted = true
				break
			}
		}
	}
	sa.children = append(sa.children, c)
	e.stats.Phase2Established.Add(1)
	sa.log.Info("phase 2 established", "spi_in", fmt.Sprintf("%08x", c.InSPI), "spi_out", fmt.Sprintf("%08x", c.OutSPI),
		"suite", suite.String(), "encap", c.Encap, "pfs", c.PFS)
	if old != nil {
		e.stats.Rekeys.Add(1)
		e.stats.ChildRekeys.Add(1)
		// Make-before-break: the old pair keeps decrypting for the grace
		// period, then is deleted.
		old.expires = now.Add(e.cfg.RekeyGrace)
		e.emit(Event{Kind: EventChildRekeyed, Remote: sa.remote, Peer: sa.peer, Child: c, Old: old})
		return
	}
	e.emit(Event{Kind: EventChildUp, Remote: sa.remote, Peer: sa.peer, Child: c})
}

// selectorsFrom converts the ID payloads (or, without them, the phase 1
// addresses, RFC 2409 §5.5) to our point of view.
func selectorsFrom(q *quickMode, sa *ikeSA) Selectors {
	s := Selectors{
		Protocol: ipsecProtocolUDP,
		Local:    netip.PrefixFrom(sa.local.Addr(), sa.local.Addr().BitLen()),
		Remote:   netip.PrefixFrom(sa.remote.Addr(), sa.remote.Addr().BitLen()),
	}
	if q.idci == nil {
		s.Protocol = 0
		return s
	}
	ci, _ := ParseID(q.idci)
	cr, _ := ParseID(q.idcr)
	mine, theirs := ci, cr
	if !q.initiator {
		mine, theirs = cr, ci
	}
	s.Protocol = mine.Protocol
	s.Local, _ = mine.Prefix()
	s.LocalPort = mine.Port
	s.Remote, _ = theirs.Prefix()
	s.RemotePort = theirs.Port
	return s
}

// tick retransmits and forgets finished exchanges.
func (q *quickMode) tick(sa *ikeSA, now time.Time) {
	e := sa.e
	if q.state == qmDone {
		if now.Sub(q.doneAt) > 2*retransmitCap {
			delete(sa.qms, q.mid)
		}
		return
	}
	if q.retryAt.IsZero() || now.Before(q.retryAt) {
		return
	}
	if q.retries >= e.cfg.Retries {
		sa.quickModeFailed(q, ErrTimeout)
		return
	}
	q.retries++
	q.rto = min(q.rto*2, retransmitCap)
	q.retryAt = now.Add(q.rto)
	e.stats.Retransmits.Add(1)
	e.send(q.lastSent, sa.local, sa.remote, sa.natt)
}

// tickChildren rekeys children before expiry (the Quick Mode initiator
// does, so both ends do not race) and removes expired ones.
func (sa *ikeSA) tickChildren(now time.Time) {
	e := sa.e
	kept := sa.children[:0]
	var down []*ChildSA
	for _, c := range sa.children {
		if !now.Before(c.expires) {
			down = append(down, c)
			continue
		}
		kept = append(kept, c)
	}
	sa.children = kept
	for _, c := range down {
		sa.sendDeleteESP(c)
		e.emit(Event{Kind: EventChildDown, Remote: sa.remote, Peer: sa.peer, Child: c, Err: fmt.Errorf("ike: IPsec SA %08x expired", c.InSPI)})
	}
	for _, c := range sa.children {
		margin := min(e.cfg.RekeyMargin, c.Lifetime/2)
		if c.Role == RoleInitiator && !c.rekeyStarted && !now.Before(c.expires.Add(-margin)) {
			if err := sa.startQuickMode(c); err != nil {
				sa.log.Warn("phase 2 rekey not started", "err", err)
			}
		}
	}
}

// quickModeFailed ends an exchange; for one we started, the composition is
// told so it can retry or reconnect.
func (sa *ikeSA) quickModeFailed(q *quickMode, err error) {
	e := sa.e
	delete(sa.qms, q.mid)
	e.stats.Phase2Failed.Add(1)
	e.warn("quick mode failed", "peer", sa.remote, "mid", q.mid, "err", err)
	if q.rekeyOf != nil {
		q.rekeyOf.rekeyStarted = false
	}
	if q.initiator {
		e.emit(Event{Kind: EventChildFailed, Remote: sa.remote, Peer: sa.peer, Old: q.rekeyOf, Err: err})
	} else if q.child != nil {
		// Withdraw the inbound SA offered with HASH(2).
		e.emit(Event{Kind: EventChildDown, Remote: sa.remote, Peer: sa.peer, Child: q.child, Err: err})
	}
}
