package ike

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// sendInformational sends an encrypted informational exchange protected
// by HASH(1) = prf(SKEYID_a, M-ID | N/D) (RFC 2409 §5.7). Informational
// messages are not retransmitted.
func (sa *ikeSA) sendInformational(ps []Payload) {
	if sa.state != p1Established {
		return
	}
	mid := binary.BigEndian.Uint32(sa.e.random(4)) | 1
	rest := appendPayloads(nil, ps)
	h := prf(sa.prop.Hash, sa.keys.a, midBytes(mid), rest)
	iv := phase2IV(sa.prop.Hash, sa.iv, mid)
	b := sa.phase2Encrypt(ExchangeInformational, mid, &iv, append([]Payload{{PayloadHash, h}}, ps...))
	sa.e.send(b, sa.local, sa.remote, sa.natt)
}

// sendNotifyInfo sends an error notify inside phase 1 protection.
func (sa *ikeSA) sendNotifyInfo(t NotifyType) {
	n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: t, SPI: append(sa.ci[:], sa.cr[:]...)}
	sa.e.stats.NotifiesSent.Add(1)
	sa.sendInformational([]Payload{{PayloadNotify, n.Append(nil)}})
}

// sendDeleteESP tells the peer to drop the SA it sends to us on c.InSPI
// (RFC 2408 §3.15: the SPI is the one the receiver of the Delete uses... as
// implementations agree, each side deletes by its own inbound SPI).
func (sa *ikeSA) sendDeleteESP(c *ChildSA) {
	d := Delete{DOI: DOIIPsec, Protocol: ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, c.InSPI)}}
	sa.sendInformational([]Payload{{PayloadDelete, d.Append(nil)}})
}

// informationalInput handles Notify and Delete (RFC 2408 §5.14-5.15,
// RFC 3706 for R-U-THERE).
func (sa *ikeSA) informationalInput(m *Message, local, remote netip.AddrPort, natt bool) error {
	e := sa.e
	if m.Encrypted == nil {
		// Unprotected notifies are believed only while phase 1 is being
		// negotiated and only from the peer's address (RFC 2408 §5.5).
		if sa.state == p1Established || remote.Addr() != sa.remote.Addr() {
			e.stats.Unmatched.Add(1)
			return nil
		}
		if n, ok := m.Find(PayloadNotify); ok {
			return sa.plainNotify(n)
		}
		return nil
	}
	if sa.state != p1Established {
		e.stats.Unmatched.Add(1)
		return nil
	}
	iv := phase2IV(sa.prop.Hash, sa.iv, m.Header.MessageID)
	plain, err := decrypt(sa.blk, iv, m.Encrypted)
	if err != nil {
		e.stats.Malformed.Add(1)
		return nil
	}
	hash, rest, ps, err := hashed(m.Header.Next, plain)
	if err != nil {
		e.stats.Malformed.Add(1)
		return nil
	}
	if !hmac.Equal(hash, prf(sa.prop.Hash, sa.keys.a, midBytes(m.Header.MessageID), rest)) {
		e.stats.Malformed.Add(1)
		e.warn("informational HASH(1) does not verify", "peer", remote)
		return nil
	}
	sa.float(local, remote, natt)
	sa.lastHeard = e.cfg.Clock.Now()
	for _, p := range ps {
		switch p.Type {
		case PayloadNotify:
			n, err := ParseNotify(p.Body)
			if err != nil {
				e.stats.Malformed.Add(1)
				continue
			}
			e.stats.NotifiesReceived.Add(1)
			sa.notify(n)
		case PayloadDelete:
			d, err := ParseDelete(p.Body)
			if err != nil {
				e.stats.Malformed.Add(1)
				continue
			}
			e.stats.DeletesReceived.Add(1)
			sa.deleted(d)
			if sa.state == p1Dead {
				return nil
			}
		}
	}
	return nil
}

// notify acts on a protected notify.
func (sa *ikeSA) notify(n Notification) {
	switch n.Type {
	case NotifyRUThere:
		if len(n.Data) == 4 {
			ack := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyRUThereAck, SPI: append(sa.ci[:], sa.cr[:]...), Data: n.Data}
			sa.sendInformational([]Payload{{PayloadNotify, ack.Append(nil)}})
		}
	case NotifyRUThereAck:
		if len(n.Data) == 4 && binary.BigEndian.Uint32(n.Data) == sa.dpdSeq {
			sa.dpdPending = false
		}
	case NotifyInitialContact, NotifyResponderLifetime, NotifyReplayStatus:
	default:
		sa.e.warn("peer sent notify", "peer", sa.remote, "reason", n.Type)
		if n.Type < 8192 {
			// An error (RFC 2408 §3.14.1) while we wait for a Quick Mode
			// answer refers to that exchange.
			for _, q := range sa.qms {
				if q.initiator && q.state == qmSent1 {
					sa.quickModeFailed(q, &NotifyError{Type: n.Type, Err: ErrPeerNotify})
				}
			}
		}
	}
}

// deleted handles a Delete payload: an ISAKMP SA by cookies, or ESP SAs by
// the SPI the peer receives on (our OutSPI).
func (sa *ikeSA) deleted(d Delete) {
	e := sa.e
	switch d.Protocol {
	case ProtoISAKMP:
		for _, s := range d.SPIs {
			if len(s) == 16 && string(s[:8]) == string(sa.ci[:]) && string(s[8:]) == string(sa.cr[:]) {
				sa.teardown(fmt.Errorf("%w the ISAKMP SA", ErrPeerDeleted), false)
				return
			}
		}
	case ProtoESP:
		for _, s := range d.SPIs {
			if len(s) != 4 {
				continue
			}
			spi := binary.BigEndian.Uint32(s)
			for i, c := range sa.children {
				// Implementations differ on which SPI of the pair they
				// name; both are random, so accept either.
				if c.OutSPI == spi || c.InSPI == spi {
					sa.children = append(sa.children[:i], sa.children[i+1:]...)
					e.emit(Event{Kind: EventChildDown, Remote: sa.remote, Peer: sa.peer, Child: c, Err: fmt.Errorf("%w IPsec SA %08x", ErrPeerDeleted, spi)})
					break
				}
			}
		}
	}
}

// tickDPD sends R-U-THERE after DPDInterval of silence and declares the
// peer dead after DPDTimeout without an answer (RFC 3706 §5).
func (sa *ikeSA) tickDPD(now time.Time) {
	e := sa.e
	if !sa.peerDPD || e.cfg.DPDInterval < 0 {
		return
	}
	if sa.dpdPending {
		if now.Sub(sa.dpdFirstSent) >= e.cfg.DPDTimeout {
			e.stats.DeadPeers.Add(1)
			sa.log.Warn("dead peer detected", "reason", "no R-U-THERE-ACK")
			sa.teardown(ErrDeadPeer, false)
			return
		}
		if now.Sub(sa.dpdSentAt) >= e.cfg.Retransmit*4 {
			sa.sendRUThere(now)
		}
		return
	}
	if now.Sub(sa.lastHeard) >= e.cfg.DPDInterval {
		sa.dpdPending = true
		sa.dpdFirstSent = now
		sa.sendRUThere(now)
	}
}

func (sa *ikeSA) sendRUThere(now time.Time) {
	sa.dpdSeq++
	sa.dpdSentAt = now
	sa.e.stats.DPDSent.Add(1)
	n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyRUThere, SPI: append(sa.ci[:], sa.cr[:]...), Data: binary.BigEndian.AppendUint32(nil, sa.dpdSeq)}
	sa.sendInformational([]Payload{{PayloadNotify, n.Append(nil)}})
}
