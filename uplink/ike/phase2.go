package ike

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// qmState is a Quick Mode exchange's state (RFC 2409 §5.5):
//
//	Initiator                               Responder
//	qmSent1  --- HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr] [, NAT-OA] -->
//	         <-- HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, NAT-OA] --- qmSent2
//	qmDone   --- HDR*, HASH(3) ------------------------------------------> qmDone
type qmState uint8

const (
	qmSent1 qmState = iota + 1 // initiator waits for HASH(2)
	qmSent2                    // responder waits for HASH(3)
	qmDone                     // finished; kept briefly to answer duplicates
)

// quickMode is one Quick Mode exchange, keyed by message ID.
type quickMode struct {
	mid       uint32
	initiator bool
	state     qmState
	iv        []byte
	ni, nr    []byte
	dh        *dhKey
	gqm       []byte
	inSPI     uint32
	outSPI    uint32
	chosen    phase2Attrs
	idci      []byte // ID payload bodies, nil when absent
	idcr      []byte
	natoaI    netip.Addr
	natoaR    netip.Addr
	rekeyOf   *ChildSA
	child     *ChildSA // responder: built when HASH(2) is sent
	lastSent  []byte
	lastRecv  [32]byte
	retryAt   time.Time
	retries   int
	rto       time.Duration
	doneAt    time.Time
	offered   []ESPProposal
	encapMode uint16
}

// phase2Encrypt encrypts an informational or Quick Mode message with the
// exchange's IV chain and returns the datagram.
func (sa *ikeSA) phase2Encrypt(ex Exchange, mid uint32, iv *[]byte, ps []Payload) []byte {
	plain := appendPayloads(nil, ps)
	ct := encrypt(sa.blk, *iv, plain)
	*iv = lastBlock(ct, sa.blk.BlockSize())
	h := sa.header(ex, mid, FlagEncryption)
	h.Next = ps[0].Type
	return append(appendHeader(nil, h, HeaderLen+len(ct)), ct...)
}

// hashed splits a decrypted phase 2 message into HASH and the bytes after
// it (up to the end of the last payload, so padding is excluded).
func hashed(first PayloadType, plain []byte) (hash, rest []byte, ps []Payload, err error) {
	ps, err = parsePayloads(first, plain, HeaderLen)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(ps) == 0 || ps[0].Type != PayloadHash {
		return nil, nil, nil, perr(HeaderLen, "first payload is not HASH", ErrBadPayload)
	}
	end := 0
	for _, p := range ps {
		end += genericHeaderLen + len(p.Body)
	}
	return ps[0].Body, plain[genericHeaderLen+len(ps[0].Body) : end], ps[1:], nil
}

func midBytes(mid uint32) []byte { return binary.BigEndian.AppendUint32(nil, mid) }

// startQuickMode negotiates an ESP SA pair for L2TP (RFC 3193 §5:
// UDP/1701 both ends), or rekeys old.
func (sa *ikeSA) startQuickMode(old *ChildSA) error {
	if old != nil && old.Selectors.Local.IsValid() {
		// A rekey keeps the selectors of the SA it replaces.
		s := old.Selectors
		return sa.startQuickModeWith(old, selectorID(s.Local, s.Protocol, s.LocalPort), selectorID(s.Remote, s.Protocol, s.RemotePort))
	}
	return sa.startQuickModeWith(old,
		AddrID(sa.local.Addr(), ipsecProtocolUDP, l2tpPort), AddrID(sa.remote.Addr(), ipsecProtocolUDP, l2tpPort))
}

// selectorID encodes a prefix as an address or subnet ID (RFC 2407 §4.6.2).
func selectorID(p netip.Prefix, proto uint8, port uint16) Identification {
	a := p.Addr().Unmap()
	if p.Bits() == a.BitLen() {
		return AddrID(a, proto, port)
	}
	mask := net.CIDRMask(p.Bits(), a.BitLen())
	t := IDIPv4AddrSubnet
	if a.Is6() {
		t = IDIPv6AddrSubnet
	}
	return Identification{Type: t, Protocol: proto, Port: port, Data: append(a.AsSlice(), mask...)}
}

// startQuickModeWith negotiates with explicit selectors IDci, IDcr.
func (sa *ikeSA) startQuickModeWith(old *ChildSA, idci, idcr Identification) error {
	e := sa.e
	q := &quickMode{initiator: true, rekeyOf: old, rto: e.cfg.Retransmit}
	for q.mid == 0 || sa.qms[q.mid] != nil {
		q.mid = binary.BigEndian.Uint32(e.random(4))
	}
	q.inSPI = sa.e.newSPI()
	q.ni = e.random(nonceLen)
	// All proposals share the PFS group of the first one: the KE payload
	// can carry only one group.
	pfs := e.cfg.ESPProposals[0].PFS
	for _, p := range e.cfg.ESPProposals {
		if p.PFS == pfs {
			q.offered = append(q.offered, p)
		}
	}
	q.encapMode = encapTransport
	if sa.behindNAT() {
		q.encapMode = encapUDPTransport
		if sa.nat == natDraft {
			q.encapMode = encapUDPTransportD
		}
	}
	var ts []Transform
	for i, p := range q.offered {
		ts = append(ts, phase2Transform(uint8(i+1), p, q.encapMode, e.cfg.IPsecLifetime, e.cfg.IPsecLifeKB))
	}
	spi := binary.BigEndian.AppendUint32(nil, q.inSPI)
	sap := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{{Num: 1, Protocol: ProtoESP, SPI: spi, Transforms: ts}}}
	ps := []Payload{{PayloadSA, sap.Append(nil)}, {PayloadNonce, q.ni}}
	if pfs != GroupNone {
		var err error
		if q.dh, err = newDH(pfs, e.cfg.Rand); err != nil {
			return err
		}
		ps = append(ps, Payload{PayloadKE, q.dh.pub})
	}
	q.idci = idci.Append(nil)
	q.idcr = idcr.Append(nil)
	ps = append(ps, Payload{PayloadID, q.idci}, Payload{PayloadID, q.idcr})
	ps = append(ps, sa.natoaPayloads(sa.local.Addr(), sa.remote.Addr())...)
	rest := appendPayloads(nil, ps)
	h := prf(sa.prop.Hash, sa.keys.a, midBytes(q.mid), rest)
	q.iv = phase2IV(sa.prop.Hash, sa.iv, q.mid)
	q.lastSent = sa.phase2Encrypt(ExchangeQuickMode, q.mid, &q.iv, append([]Payload{{PayloadHash, h}}, ps...))
	q.state = qmSent1
	q.retryAt = e.cfg.Clock.Now().Add(q.rto)
	sa.qms[q.mid] = q
	if old != nil {
		old.rekeyStarted = true
	}
	e.send(q.lastSent, sa.local, sa.remote, sa.natt)
	sa.log.Debug("quick mode started", "mid", q.mid, "rekey", old != nil)
	return nil
}

// natoaPayloads sends the original addresses in transport mode behind a NAT
// (RFC 3947 §5.2: NAT-OAi then NAT-OAr).
func (sa *ikeSA) natoaPayloads(i, r netip.Addr) []Payload {
	if !sa.behindNAT() || sa.nat == natNone {
		return nil
	}
	t := PayloadNATOA
	if sa.nat == natDraft {
		t = PayloadNATOADraft
	}
	return []Payload{{t, AppendNATOA(nil, i)}, {t, AppendNATOA(nil, r)}}
}

func (e *Engine) newSPI() uint32 {
	for {
		s := binary.BigEndian.Uint32(e.random(4))
		if s > 0xff { // 1-255 are reserved (RFC 4303 §2.1)
			return s
		}
	}
}

// quickModeInput handles a Quick Mode message for an established SA.
func (sa *ikeSA) quickModeInput(m *Message, b []byte, local, remote netip.AddrPort, natt bool) error {
	if sa.state != p1Established || m.Encrypted == nil || m.Header.MessageID == 0 {
		sa.e.stats.Unmatched.Add(1)
		return nil
	}
	sum := sha256.Sum256(b[:m.Header.Length])
	q := sa.qms[m.Header.MessageID]
	if q != nil && q.lastRecv == sum {
		sa.e.stats.Duplicates.Add(1)
		if q.lastSent != nil {
			sa.e.send(q.lastSent, sa.local, sa.remote, sa.natt)
		}
		return nil
	}
	var iv []byte
	if q == nil {
		iv = phase2IV(sa.prop.Hash, sa.iv, m.Header.MessageID)
	} else {
		iv = q.iv
	}
	plain, err := decrypt(sa.blk, iv, m.Encrypted)
	if err != nil {
		return err
	}
	hash, rest, ps, err := hashed(m.Header.Next, plain)
	if err != nil {
		return err
	}
	dm := &Message{Header: m.Header, Payloads: ps}
	next := lastBlock(m.Encrypted, sa.blk.BlockSize())
	switch {
	case q == nil:
		want := prf(sa.prop.Hash, sa.keys.a, midBytes(m.Header.MessageID), rest)
		if !hmac.Equal(hash, want) {
			sa.e.stats.Malformed.Add(1)
			return fmt.Errorf("%w: Quick Mode HASH(1)", ErrHashMismatch)
		}
		sa.float(local, remote, natt)
		sa.lastHeard = sa.e.cfg.Clock.Now()
		if e := sa.e; len(sa.qms) >= e.cfg.MaxQuickModes || len(sa.children) >= e.cfg.MaxChildren {
			// An authenticated peer starting Quick Modes without end:
			// each would cost DH (PFS) and an installed ESP SA.
			e.stats.QuickModeLimited.Add(1)
			e.warn("quick mode limit reached, dropping the peer's new Quick Mode", "peer", remote, "exchanges", len(sa.qms), "children", len(sa.children))
			return nil
		}
		return sa.respondQuickMode(dm, next, sum)
	case q.initiator && q.state == qmSent1:
		sa.float(local, remote, natt)
		q.iv = next
		if err := sa.initRecvQM2(q, dm, hash, rest); err != nil {
			sa.quickModeFailed(q, err)
			return nil
		}
		q.lastRecv = sum
	case !q.initiator && q.state == qmSent2:
		want := prf(sa.prop.Hash, sa.keys.a, []byte{0}, midBytes(q.mid), q.ni, q.nr)
		if !hmac.Equal(hash, want) {
			return fmt.Errorf("%w: Quick Mode HASH(3)", ErrHashMismatch)
		}
		q.lastRecv = sum
		q.state = qmDone
		q.doneAt = sa.e.cfg.Clock.Now()
		q.retryAt = time.Time{}
		q.lastSent = nil
		sa.childUp(q)
	default:
		sa.e.stats.Unmatched.Add(1)
		return nil
	}
	sa.lastHeard = sa.e.cfg.Clock.Now()
	return nil
}

// respondQuickMode chooses an ESP transform, honouring the initiator's
// order within our policy, and sends HASH(2).
func (sa *ikeSA) respondQuickMode(m *Message, iv []byte, sum [32]byte) error {
	e := sa.e
	q := &quickMode{mid: m.Header.MessageID, iv: iv, lastRecv: sum, rto: e.cfg.Retransmit}
	sap, ok1 := m.Find(PayloadSA)
	np, ok2 := m.Find(PayloadNonce)
	if !ok1 || !ok2 || !nonceOK(np.Body) {
		return perr(HeaderLen, "Quick Mode SA/nonce", ErrBadPayload)
	}
	q.ni = append([]byte{}, np.Body...)
	sai, err := ParseSA(sap.Body)
	if err != nil {
		return err
	}
	var chosen *Proposal
	refusal := &NoProposalError{Phase: "quick"}
	for _, p := range sai.Proposals {
		if p.Protocol != ProtoESP || len(p.SPI) != 4 {
			continue
		}
		for _, t := range p.Transforms {
			a, ok := decodePhase2(t)
			if !ok || !e.allowedESP(a.prop) || !sa.encapOK(a.encap) {
				if !ok || !e.allowedESP(a.prop) {
					refusal.offer(offeredESP(a.prop), a.prop.Legacy())
				}
				continue
			}
			q.chosen = a
			q.outSPI = binary.BigEndian.Uint32(p.SPI)
			chosen = &Proposal{Num: p.Num, Protocol: ProtoESP, Transforms: []Transform{t}}
			break
		}
		if chosen != nil {
			break
		}
	}
	if chosen == nil {
		sa.sendNotifyInfo(NotifyNoProposalChosen)
		if len(refusal.Offered) == 0 {
			// Every transform was allowed but with the wrong encapsulation.
			return fmt.Errorf("%w: no acceptable ESP transform (encapsulation mode)", ErrNoProposalChosen)
		}
		refusal.Allowed = ProposalStrings(e.cfg.ESPProposals)
		e.logRefusal(sa.remote, refusal)
		return refusal
	}
	ids := m.All(PayloadID)
	if len(ids) == 2 {
		if err := selectorsOK(ids[0].Body, ids[1].Body); err != nil {
			sa.sendNotifyInfo(NotifyInvalidIDInformation)
			return err
		}
		q.idci = append([]byte{}, ids[0].Body...)
		q.idcr = append([]byte{}, ids[1].Body...)
	} else if len(ids) != 0 {
		return fmt.Errorf("%w: %d ID payloads in Quick Mode", ErrInvalidID, len(ids))
	}
	oas := append(m.All(PayloadNATOA), m.All(PayloadNATOADraft)...)
	if len(oas) >= 1 {
		q.natoaI, _ = ParseNATOA(oas[0].Body)
	}
	if len(oas) >= 2 {
		q.natoaR, _ = ParseNATOA(oas[1].Body)
	}
	q.inSPI = e.newSPI()
	q.nr = e.random(nonceLen)
	chosen.SPI = binary.BigEndian.AppendUint32(nil, q.inSPI)
	reply := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{*chosen}}
	ps := []Payload{{PayloadSA, reply.Append(nil)}, {PayloadNonce, q.nr}}
	if g := q.chosen.prop.PFS; g != GroupNone {
		kp, ok := m.Find(PayloadKE)
		if !ok {
			return fmt.Errorf("%w: PFS without KE", ErrBadKE)
		}
		if q.dh, err = newDH(g, e.cfg.Rand); err != nil {
			return err
		}
		if q.gqm, err = q.dh.shared(kp.Body); err != nil {
			return err
		}
		ps = append(ps, Payload{PayloadKE, q.dh.pub})
	}
	if q.idci != nil {
		ps = append(ps, Payload{PayloadID, q.idci}, Payload{PayloadID, q.idcr})
	}
	if len(oas) > 0 {
		ps = append(ps, sa.natoaPayloads(sa.remote.Addr(), sa.local.Addr())...)
	}
	if n, ok := sa.responderLifetime(q); ok {
		ps = append(ps, Payload{PayloadNotify, n.Append(nil)})
	}
	rest := appendPayloads(nil, ps)
	h := prf(sa.prop.Hash, sa.keys.a, midBytes(q.mid), q.ni, rest)
	q.lastSent = sa.phase2Encrypt(ExchangeQuickMode, q.mid, &q.iv, append([]Payload{{PayloadHash, h}}, ps...))
	q.state = qmSent2
	q.retryAt = e.cfg.Clock.Now().Add(q.rto)
	sa.qms[q.mid] = q
	// The initiator may send on the new SA as soon as it has our HASH(2),
	// before its HASH(3) reaches us: offer the inbound SA now.
	q.child = sa.buildChild(q)
	e.emit(Event{Kind: EventChildInbound, Remote: sa.remote, Peer: sa.peer, Child: q.child})
	e.send(q.lastSent, sa.local, sa.remote, sa.natt)
	return nil
}

// encapOK accepts transport mode, UDP-encapsulated when a NAT was detected.
func (sa *ikeSA) encapOK(m uint16) bool {
	switch m {
	case encapTransport:
		return !sa.behindNAT()
	case encapUDPTransport, encapUDPTransportD:
		return sa.behindNAT()
	}
	return false
}

func (e *Engine) allowedESP(p ESPProposal) bool {
	for _, q := range e.cfg.ESPProposals {
		if q == p {
			return true
		}
	}
	return false
}

// selectorsOK accepts L2TP transport selectors: UDP (or any protocol) with
// port 1701 or any on the responder side and any port on the initiator's
// (clients behind NAT use an ephemeral source port), or whole-space subnets
// as SoftEther proposes.
func selectorsOK(ci, cr []byte) error {
	for i, b := range [][]byte{ci, cr} {
		id, err := ParseID(b)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidID, err)
		}
		if _, ok := id.Prefix(); !ok {
			return fmt.Errorf("%w: selector type %d", ErrInvalidID, id.Type)
		}
		if id.Protocol != 0 && id.Protocol != ipsecProtocolUDP {
			return fmt.Errorf("%w: selector protocol %d", ErrInvalidID, id.Protocol)
		}
		_ = i
	}
	return nil
}

// initRecvQM2 checks HASH(2), takes the responder's choice and sends HASH(3).
func (sa *ikeSA) initRecvQM2(q *quickMode, m *Message, hash, rest []byte) error {
	e := sa.e
	if n, ok := m.Find(PayloadNotify); ok && len(m.Payloads) == 1 {
		return sa.plainNotify(n)
	}
	np, ok := m.Find(PayloadNonce)
	if !ok || !nonceOK(np.Body) {
		return perr(HeaderLen, "Quick Mode nonce", ErrBadPayload)
	}
	want := prf(sa.prop.Hash, sa.keys.a, midBytes(q.mid), q.ni, rest)
	if !hmac.Equal(hash, want) {
		return fmt.Errorf("%w: Quick Mode HASH(2)", ErrHashMismatch)
	}
	q.nr = append([]byte{}, np.Body...)
	sap, ok := m.Find(PayloadSA)
	if !ok {
		return perr(HeaderLen, "Quick Mode SA", ErrBadPayload)
	}
	sar, err := ParseSA(sap.Body)
	if err != nil {
		return err
	}
	if len(sar.Proposals) != 1 || len(sar.Proposals[0].Transforms) != 1 || len(sar.Proposals[0].SPI) != 4 {
		return fmt.Errorf("%w: bad Quick Mode answer", ErrNoProposalChosen)
	}
	a, ok := decodePhase2(sar.Proposals[0].Transforms[0])
	offered := false
	for _, p := range q.offered {
		offered = offered || p == a.prop
	}
	if !ok || !offered || a.encap != q.encapMode {
		return fmt.Errorf("%w: responder chose %v, which we did not offer", ErrNoProposalChosen, a.prop)
	}
	q.chosen = a
	q.outSPI = binary.BigEndian.Uint32(sar.Proposals[0].SPI)
	for _, np := range m.All(PayloadNotify) {
		if n, err := ParseNotify(np.Body); err == nil && n.Type == NotifyResponderLifetime {
			applyResponderLifetime(&q.chosen, n.Data)
		}
	}
	if q.dh != nil {
		kp, ok := m.Find(PayloadKE)
		if !ok {
			return fmt.Errorf("%w: PFS answer without KE", ErrBadKE)
		}
		if q.gqm, err = q.dh.shared(kp.Body); err != nil {
			return err
		}
	}
	if ids := m.All(PayloadID); len(ids) == 2 {
		if !bytes.Equal(ids[0].Body, q.idci) || !bytes.Equal(ids[1].Body, q.idcr) {
			// strongSwan answers a transport-mode proposal from behind a
			// NAT with the addresses it sees; accept any well-formed
			// selectors and keep our own view of them.
			if err := selectorsOK(ids[0].Body, ids[1].Body); err != nil {
				return err
			}
			sa.log.Debug("responder returned different selectors", "mid", q.mid)
		}
	} else if len(ids) != 0 {
		return fmt.Errorf("%w: %d ID payloads in Quick Mode answer", ErrInvalidID, len(ids))
	}
	oas := append(m.All(PayloadNATOA), m.All(PayloadNATOADraft)...)
	if len(oas) >= 2 {
		q.natoaI, _ = ParseNATOA(oas[0].Body)
		q.natoaR, _ = ParseNATOA(oas[1].Body)
	}
	h3 := prf(sa.prop.Hash, sa.keys.a, []byte{0}, midBytes(q.mid), q.ni, q.nr)
	q.lastSent = sa.phase2Encrypt(ExchangeQuickMode, q.mid, &q.iv, []Payload{{PayloadHash, h3}})
	// The responder switches to the new pair when our HASH(3) reaches it
	// and may send on it at once: offer the inbound SA before HASH(3)
	// goes out (EventChildInbound is delivered before this batch's
	// packets, EventChildUp/Rekeyed after them). Offered after, a loaded
	// machine lost the responder's first packet on the new SPI (a make
	// test run beside two others: TestRekeyUnderTraffic, packet 91).
	q.child = sa.buildChild(q)
	e.emit(Event{Kind: EventChildInbound, Remote: sa.remote, Peer: sa.peer, Child: q.child})
	e.send(q.lastSent, sa.local, sa.remote, sa.natt)
	q.state = qmDone
	q.doneAt = e.cfg.Clock.Now()
	q.retryAt = time.Time{}
	sa.childUp(q)
	return nil
}

// responderLifetime builds a RESPONDER-LIFETIME notify (RFC 2407 §4.6.3.1)
// when our policy is shorter than what the initiator proposed, so that it
// rekeys in time instead of relying on a lifetime we will not honour.
func (sa *ikeSA) responderLifetime(q *quickMode) (Notification, bool) {
	e := sa.e
	var attrs []byte
	if q.chosen.life == 0 || q.chosen.life > e.cfg.IPsecLifetime {
		attrs = basic(attr2LifeType, lifeSeconds).append(attrs)
		attrs = lifeAttr(attr2LifeDur, uint64(e.cfg.IPsecLifetime/time.Second)).append(attrs)
	}
	if kb := e.cfg.IPsecLifeKB; kb > 0 && (q.chosen.lifeKB == 0 || q.chosen.lifeKB > kb) {
		attrs = basic(attr2LifeType, lifeKilobytes).append(attrs)
		attrs = lifeAttr(attr2LifeDur, kb).append(attrs)
	}
	if attrs == nil {
		return Notification{}, false
	}
	return Notification{DOI: DOIIPsec, Protocol: ProtoESP, Type: NotifyResponderLifetime,
		SPI: binary.BigEndian.AppendUint32(nil, q.outSPI), Data: attrs}, true
}

// applyResponderLifetime lowers the chosen lifetimes to the responder's.
func applyResponderLifetime(a *phase2Attrs, data []byte) {
	attrs, err := parseAttributes(data, 0)
	if err != nil {
		return
	}
	var lifeType uint64
	for _, at := range attrs {
		switch at.Type {
		case attr2LifeType:
			lifeType = at.Value
		case attr2LifeDur:
			switch lifeType {
			case uint64(lifeSeconds):
				if d := time.Duration(at.Value) * time.Second; at.Value < 1<<31 && (a.life == 0 || d < a.life) {
					a.life = d
				}
			case uint64(lifeKilobytes):
				if a.lifeKB == 0 || at.Value < a.lifeKB {
					a.lifeKB = at.Value
				}
			}
		}
	}
}
