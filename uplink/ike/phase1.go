package ike

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
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
	natLocal      bool // we are behind a NAT (or pretend to be)
	natRemote     bool // the peer is behind a NAT
	peerDPD       bool

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
	replaces *ikeSA // initiator: the SA this one rekeys
	rekeying bool   // a replacement is under way
	wantL2TP bool   // initiator: bring up the L2TP child after phase 1
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
			if old := e.pending[h.ICookie]; old != nil && old.role == RoleResponder {
				old.receive(m, b, local, remote, natt)
				return
			}
			e.respondMM1(m, b, local, remote, natt)
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

// mainMode runs the Main Mode transition for one message.
func (sa *ikeSA) mainMode(m *Message, sum [32]byte, local, remote netip.AddrPort, natt bool) error {
	var err error
	switch {
	case sa.role == RoleInitiator && sa.state == p1MM1Sent && m.Encrypted == nil:
		err = sa.initRecvMM2(m)
	case sa.role == RoleResponder && sa.state == p1MM2Sent && m.Encrypted == nil:
		if !sa.e.allow(remote.Addr()) {
			// Before any DH work (RFC 2522-style protection is out of scope).
			sa.e.stats.RateLimited.Add(1)
			return nil
		}
		err = sa.respRecvMM3(m)
	case sa.role == RoleInitiator && sa.state == p1MM3Sent && m.Encrypted == nil:
		err = sa.initRecvMM4(m)
	case sa.role == RoleResponder && sa.state == p1MM4Sent && m.Encrypted != nil:
		sa.float(local, remote, natt)
		err = sa.respRecvMM5(m)
	case sa.role == RoleInitiator && sa.state == p1MM5Sent && m.Encrypted != nil:
		err = sa.initRecvMM6(m)
	default:
		sa.e.stats.Unmatched.Add(1)
		sa.log.Debug("unexpected Main Mode message", "state", sa.state)
		return nil
	}
	if err == nil {
		sa.lastRecv = sum
		sa.lastHeard = sa.e.cfg.Clock.Now()
	}
	return err
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

// startMainMode sends the first Main Mode message (RFC 2409 §5).
func (e *Engine) startMainMode(local, remote netip.AddrPort, replaces *ikeSA) (*ikeSA, error) {
	sa := e.newSA(RoleInitiator, local, remote, replaces != nil && replaces.natt)
	sa.replaces = replaces
	sa.wantL2TP = replaces == nil
	copy(sa.ci[:], e.random(8))
	sa.setLog()
	auth, ok := e.localAuth(remote.Addr())
	if !ok {
		return nil, errors.New("ike: no PSK for peer and no certificate")
	}
	var ts []Transform
	for i, p := range e.cfg.IKEProposals {
		ts = append(ts, phase1Transform(uint8(i+1), p, auth, e.cfg.IKELifetime))
	}
	sap := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{{Num: 1, Protocol: ProtoISAKMP, Transforms: ts}}}
	sa.saBody = sap.Append(nil)
	ps := []Payload{{PayloadSA, sa.saBody}}
	for _, v := range [][]byte{VIDRFC3947, VIDNATTDraft03, VIDNATTDraft02, VIDNATTDraft02b, VIDDPD} {
		ps = append(ps, Payload{PayloadVendorID, v})
	}
	sa.state = p1MM1Sent
	e.pending[sa.ci] = sa
	sa.transmit(AppendMessage(nil, sa.header(ExchangeIdentityProtection, 0, 0), ps))
	sa.log.Debug("main mode started")
	return sa, nil
}

// localAuth picks our authentication method for a peer.
func (e *Engine) localAuth(remote netip.Addr) (AuthMethod, bool) {
	if e.cfg.PSK != nil {
		if _, ok := e.cfg.PSK(remote); ok {
			return AuthPSK, true
		}
	}
	if e.cfg.Cert != nil {
		return certAuthMethod(e.cfg.Cert.Key)
	}
	return 0, false
}

// vendorIDs notes NAT-T and DPD support from the peer's vendor IDs.
func (sa *ikeSA) vendorIDs(m *Message) {
	for _, p := range m.All(PayloadVendorID) {
		switch {
		case bytes.Equal(p.Body, VIDRFC3947):
			sa.nat = natRFC
		case bytes.Equal(p.Body, VIDNATTDraft02), bytes.Equal(p.Body, VIDNATTDraft02b), bytes.Equal(p.Body, VIDNATTDraft03):
			if sa.nat == natNone {
				sa.nat = natDraft
			}
		case bytes.Equal(p.Body, VIDDPD):
			sa.peerDPD = true
		}
	}
}

func (sa *ikeSA) ourVIDs() []Payload {
	var ps []Payload
	switch sa.nat {
	case natRFC:
		ps = append(ps, Payload{PayloadVendorID, VIDRFC3947})
	case natDraft:
		ps = append(ps, Payload{PayloadVendorID, VIDNATTDraft02b})
	}
	return append(ps, Payload{PayloadVendorID, VIDDPD})
}

// respondMM1 answers a new Main Mode (responder side). The per-source limit
// and the half-open limit apply before any state is kept.
func (e *Engine) respondMM1(m *Message, b []byte, local, remote netip.AddrPort, natt bool) {
	if e.halfOpen() >= e.cfg.MaxHalfOpen {
		e.stats.HalfOpenDropped.Add(1)
		e.warn("half-open limit reached, dropping Main Mode", "peer", remote)
		return
	}
	if !e.allow(remote.Addr()) {
		e.stats.RateLimited.Add(1)
		e.warn("rate limit, dropping Main Mode", "peer", remote)
		return
	}
	sap, ok := m.Find(PayloadSA)
	if !ok {
		e.stats.Malformed.Add(1)
		return
	}
	sai, err := ParseSA(sap.Body)
	if err != nil {
		e.stats.Malformed.Add(1)
		e.warn("malformed SA payload", "peer", remote, "err", err)
		return
	}
	sa := e.newSA(RoleResponder, local, remote, natt)
	sa.ci = m.Header.ICookie
	copy(sa.cr[:], e.random(8))
	sa.setLog()
	sa.saBody = append([]byte{}, sap.Body...)
	sa.lastRecv = sha256.Sum256(b[:m.Header.Length])
	chosen, err := e.choosePhase1(sa, sai)
	if err != nil {
		e.stats.NoProposalChosen.Add(1)
		sa.log.Info("phase 1 rejected", "reason", err)
		sa.sendPlainNotify(NotifyNoProposalChosen)
		return
	}
	sa.vendorIDs(m)
	sa.state = p1MM2Sent
	e.nHalf++
	e.sas[cookieKey(sa.ci, sa.cr)] = sa
	e.pending[sa.ci] = sa
	reply := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{chosen}}
	ps := append([]Payload{{PayloadSA, reply.Append(nil)}}, sa.ourVIDs()...)
	sa.transmit(AppendMessage(nil, sa.header(ExchangeIdentityProtection, 0, 0), ps))
}

// choosePhase1 picks the first of the initiator's transforms that our
// policy allows, honouring the initiator's order (RFC 2409 §5).
func (e *Engine) choosePhase1(sa *ikeSA, sai *SAPayload) (Proposal, error) {
	for _, p := range sai.Proposals {
		if p.Protocol != ProtoISAKMP {
			continue
		}
		for _, t := range p.Transforms {
			prop, auth, life, ok := decodePhase1(t)
			if !ok || !e.allowedIKE(prop) {
				continue
			}
			switch auth {
			case AuthPSK:
				if e.cfg.PSK == nil {
					continue
				}
				psk, ok := e.cfg.PSK(sa.remote.Addr())
				if !ok {
					continue
				}
				sa.psk = psk
			case AuthRSASig, AuthECDSA256, AuthECDSA384:
				if e.cfg.Cert == nil {
					continue
				}
				if m, ok := certAuthMethod(e.cfg.Cert.Key); !ok || m != auth {
					continue
				}
			default:
				continue
			}
			sa.prop, sa.auth = prop, auth
			sa.life = e.cfg.IKELifetime
			if life > 0 && life < sa.life {
				sa.life = life
			}
			return Proposal{Num: p.Num, Protocol: ProtoISAKMP, SPI: p.SPI, Transforms: []Transform{t}}, nil
		}
	}
	return Proposal{}, ErrNoProposalChosen
}

func (e *Engine) allowedIKE(p IKEProposal) bool {
	for _, q := range e.cfg.IKEProposals {
		if q == p {
			return true
		}
	}
	return false
}

// initRecvMM2 takes the responder's choice and sends KE, Ni and NAT-D.
func (sa *ikeSA) initRecvMM2(m *Message) error {
	if n, ok := m.Find(PayloadNotify); ok {
		return sa.plainNotify(n)
	}
	sap, ok := m.Find(PayloadSA)
	if !ok {
		return perr(HeaderLen, "SA payload missing", ErrBadPayload)
	}
	sar, err := ParseSA(sap.Body)
	if err != nil {
		return err
	}
	if len(sar.Proposals) != 1 || len(sar.Proposals[0].Transforms) != 1 {
		return fmt.Errorf("%w: responder chose %d proposals", ErrNoProposalChosen, len(sar.Proposals))
	}
	prop, auth, life, ok := decodePhase1(sar.Proposals[0].Transforms[0])
	want, _ := sa.e.localAuth(sa.remote.Addr())
	if !ok || !sa.e.allowedIKE(prop) || auth != want {
		return fmt.Errorf("%w: responder chose a transform we did not offer", ErrNoProposalChosen)
	}
	sa.prop, sa.auth = prop, auth
	sa.life = sa.e.cfg.IKELifetime
	if life > 0 && life < sa.life {
		sa.life = life
	}
	if auth == AuthPSK {
		sa.psk, _ = sa.e.cfg.PSK(sa.remote.Addr())
	}
	sa.vendorIDs(m)
	sa.dh, err = newDH(prop.Group, sa.e.cfg.Rand)
	if err != nil {
		return err
	}
	sa.gxi = sa.dh.pub
	sa.ni = sa.e.random(nonceLen)
	ps := []Payload{{PayloadKE, sa.gxi}, {PayloadNonce, sa.ni}}
	if sa.auth != AuthPSK {
		ps = append(ps, sa.certReqs()...)
	}
	ps = append(ps, sa.natdPayloads()...)
	sa.state = p1MM3Sent
	sa.transmit(AppendMessage(nil, sa.header(ExchangeIdentityProtection, 0, 0), ps))
	return nil
}

// natdPayloads builds NAT-D for the destination then the source (RFC 3947
// §3.2). Unless raw ESP is allowed, our own hash is randomised so that both
// sides see a NAT and use UDP encapsulation (what strongSwan's encap=yes does).
func (sa *ikeSA) natdPayloads() []Payload {
	if sa.nat == natNone {
		return nil
	}
	t := PayloadNATD
	if sa.nat == natDraft {
		t = PayloadNATDDraft
	}
	h := sa.prop.Hash
	dst := natdHash(h, sa.ci[:], sa.cr[:], sa.remote.Addr().Unmap().AsSlice(), sa.remote.Port())
	src := natdHash(h, sa.ci[:], sa.cr[:], sa.local.Addr().Unmap().AsSlice(), sa.local.Port())
	if !sa.e.cfg.AllowRawESP {
		src = sa.e.random(len(src))
	}
	return []Payload{{t, dst}, {t, src}}
}

// checkNATD compares the peer's NAT-D payloads with what we see (RFC 3947 §3.2).
func (sa *ikeSA) checkNATD(m *Message) {
	if sa.nat == natNone {
		return
	}
	ps := m.All(PayloadNATD)
	if len(ps) == 0 {
		ps = m.All(PayloadNATDDraft)
	}
	if len(ps) < 2 {
		return
	}
	h := sa.prop.Hash
	me := natdHash(h, sa.ci[:], sa.cr[:], sa.local.Addr().Unmap().AsSlice(), sa.local.Port())
	sa.natLocal = !bytes.Equal(ps[0].Body, me) || !sa.e.cfg.AllowRawESP
	them := natdHash(h, sa.ci[:], sa.cr[:], sa.remote.Addr().Unmap().AsSlice(), sa.remote.Port())
	sa.natRemote = true
	for _, p := range ps[1:] {
		if bytes.Equal(p.Body, them) {
			sa.natRemote = false
		}
	}
	sa.log.Debug("NAT detection", "local_behind_nat", sa.natLocal, "peer_behind_nat", sa.natRemote)
}

func (sa *ikeSA) behindNAT() bool { return sa.natLocal || sa.natRemote }

func nonceOK(b []byte) bool { return len(b) >= minNonceLen && len(b) <= maxNonceLen }

// keAndNonce reads and checks the peer's KE and nonce.
func keAndNonce(m *Message, g Group) (ke, nonce []byte, err error) {
	kp, ok1 := m.Find(PayloadKE)
	np, ok2 := m.Find(PayloadNonce)
	if !ok1 || !ok2 || !nonceOK(np.Body) {
		return nil, nil, perr(HeaderLen, "KE/nonce", ErrBadPayload)
	}
	if len(kp.Body) != g.KELen() {
		return nil, nil, fmt.Errorf("%w: KE of %d bytes for %v", ErrBadKE, len(kp.Body), g)
	}
	return append([]byte{}, kp.Body...), append([]byte{}, np.Body...), nil
}

// respRecvMM3 does the responder's DH and sends KE, Nr and NAT-D.
func (sa *ikeSA) respRecvMM3(m *Message) error {
	var err error
	sa.gxi, sa.ni, err = keAndNonce(m, sa.prop.Group)
	if err != nil {
		return err
	}
	sa.peerCR = len(m.All(PayloadCertReq)) > 0
	sa.checkNATD(m)
	if sa.dh, err = newDH(sa.prop.Group, sa.e.cfg.Rand); err != nil {
		return err
	}
	sa.gxr = sa.dh.pub
	if sa.gxy, err = sa.dh.shared(sa.gxi); err != nil {
		return err
	}
	sa.nr = sa.e.random(nonceLen)
	if err := sa.deriveKeys(); err != nil {
		return err
	}
	ps := []Payload{{PayloadKE, sa.gxr}, {PayloadNonce, sa.nr}}
	if sa.auth != AuthPSK {
		ps = append(ps, sa.certReqs()...)
	}
	ps = append(ps, sa.natdPayloads()...)
	sa.state = p1MM4Sent
	sa.transmit(AppendMessage(nil, sa.header(ExchangeIdentityProtection, 0, 0), ps))
	return nil
}

// deriveKeys computes SKEYID and friends and the first phase 1 IV.
func (sa *ikeSA) deriveKeys() error {
	sk := skeyid(sa.prop.Hash, sa.auth, sa.psk, sa.ni, sa.nr, sa.gxy)
	c := sa.prop.cipher()
	sa.keys = derivePhase1(sa.prop.Hash, sk, sa.gxy, sa.ci[:], sa.cr[:], c.keyBits/8)
	blk, err := c.block(sa.keys.enc)
	if err != nil {
		return err
	}
	sa.blk = blk
	sa.iv = phase1IV(sa.prop.Hash, sa.gxi, sa.gxr, c.blockSize())
	if sa.e.cfg.OnKeys != nil {
		sa.e.cfg.OnKeys(sa.ci, sa.cr, append([]byte{}, sa.keys.enc...))
	}
	return nil
}

// initRecvMM4 completes the DH, detects NAT, floats and sends MM5.
func (sa *ikeSA) initRecvMM4(m *Message) error {
	var err error
	sa.gxr, sa.nr, err = keAndNonce(m, sa.prop.Group)
	if err != nil {
		return err
	}
	sa.peerCR = len(m.All(PayloadCertReq)) > 0
	sa.checkNATD(m)
	if sa.gxy, err = sa.dh.shared(sa.gxr); err != nil {
		return err
	}
	if err := sa.deriveKeys(); err != nil {
		return err
	}
	if sa.nat != natNone && sa.behindNAT() && !sa.natt {
		// RFC 3947 §4: the initiator moves to port 4500 for MM5.
		sa.natt = true
		sa.local = netip.AddrPortFrom(sa.local.Addr(), sa.e.cfg.NATTPort)
		sa.remote = netip.AddrPortFrom(sa.remote.Addr(), sa.e.cfg.NATTPort)
	}
	ps, err := sa.authPayloads(true, sa.replaces == nil)
	if err != nil {
		return err
	}
	sa.state = p1MM5Sent
	sa.transmit(sa.encryptP1(ps))
	return nil
}

// encryptP1 encrypts a Main Mode message, chaining the phase 1 IV (RFC
// 2409 Appendix B).
func (sa *ikeSA) encryptP1(ps []Payload) []byte {
	plain := appendPayloads(nil, ps)
	ct := encrypt(sa.blk, sa.iv, plain)
	sa.iv = lastBlock(ct, sa.blk.BlockSize())
	h := sa.header(ExchangeIdentityProtection, 0, FlagEncryption)
	h.Next = ps[0].Type
	return append(appendHeader(nil, h, HeaderLen+len(ct)), ct...)
}

// decryptP1 decrypts a Main Mode message and parses its payloads.
func (sa *ikeSA) decryptP1(m *Message) ([]Payload, error) {
	plain, err := decrypt(sa.blk, sa.iv, m.Encrypted)
	if err != nil {
		return nil, err
	}
	ps, err := parsePayloads(m.Header.Next, plain, HeaderLen)
	if err != nil {
		return nil, err
	}
	sa.iv = lastBlock(m.Encrypted, sa.blk.BlockSize())
	return ps, nil
}

// respRecvMM5 authenticates the initiator and answers with MM6.
func (sa *ikeSA) respRecvMM5(m *Message) error {
	ps, err := sa.decryptP1(m)
	if err != nil {
		// Garbage after decryption almost always means a wrong PSK.
		return fmt.Errorf("%w: cannot parse decrypted MM5 (wrong pre-shared key?): %v", ErrAuthFailed, err)
	}
	dm := &Message{Header: m.Header, Payloads: ps}
	if err := sa.verifyAuth(dm, false); err != nil {
		return err
	}
	if sa.hasInitialContact(dm) {
		sa.e.initialContact(sa)
	}
	out, err := sa.authPayloads(false, false)
	if err != nil {
		return err
	}
	sa.lastSent = sa.encryptP1(out)
	sa.e.send(sa.lastSent, sa.local, sa.remote, sa.natt)
	sa.retryAt = time.Time{} // the responder's last message is resent on duplicates only
	sa.establish()
	return nil
}

// initRecvMM6 authenticates the responder.
func (sa *ikeSA) initRecvMM6(m *Message) error {
	ps, err := sa.decryptP1(m)
	if err != nil {
		return fmt.Errorf("%w: cannot parse decrypted MM6 (wrong pre-shared key?): %v", ErrAuthFailed, err)
	}
	if err := sa.verifyAuth(&Message{Header: m.Header, Payloads: ps}, true); err != nil {
		return err
	}
	sa.retryAt = time.Time{}
	sa.lastSent = nil
	sa.establish()
	return nil
}

func (sa *ikeSA) hasInitialContact(m *Message) bool {
	for _, p := range m.All(PayloadNotify) {
		if n, err := ParseNotify(p.Body); err == nil && n.Type == NotifyInitialContact {
			return true
		}
	}
	return false
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
	sa.log.Info("phase 1 established", "proposal", sa.prop.String(), "auth", sa.auth, "nat", sa.behindNAT(), "natt", sa.natt)
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
	}
	if errors.Is(err, ErrNoProposalChosen) {
		e.stats.NoProposalChosen.Add(1)
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
