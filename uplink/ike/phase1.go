package ike

import (
	"bytes"
	"crypto/hmac"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/uplink/peerid"
)

// mainMode runs the Main Mode transition for one message.
func (sa *ikeSA) mainMode(m *Message, sum [32]byte, local, remote netip.AddrPort, natt bool) error {
	var err error
	switch {
	case sa.role == RoleInitiator && sa.state == p1MM1Sent && m.Encrypted == nil:
		err = sa.initRecvMM2(m)
	case sa.role == RoleResponder && sa.state == p1MM2Sent && m.Encrypted == nil:
		// Admitted by respondMM3 (halfopen.go) before any DH work.
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
	if errors.Is(err, errBusy) {
		return nil // not processed: its retransmission will be
	}
	if err == nil {
		sa.lastRecv = sum
		sa.lastHeard = sa.e.cfg.Clock.Now()
	}
	return err
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
	vids := e.initiatorVIDs
	if vids == nil {
		vids = [][]byte{VIDRFC3947, VIDNATTDraft03, VIDNATTDraft02, VIDNATTDraft02b, VIDDPD}
	}
	for _, v := range vids {
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

// vendorIDs notes NAT-T and DPD support from the peer's vendor IDs, and
// the implementation they name (peerid).
func (sa *ikeSA) vendorIDs(m *Message) {
	var kept [][]byte
	defer func() { sa.peerKind = peerid.FromVendorIDs(kept) }()
	for _, p := range m.All(PayloadVendorID) {
		kept = peerid.KeepVendorID(kept, p.Body)
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

// choosePhase1 picks the first of the initiator's transforms that our
// policy allows, honouring the initiator's order (RFC 2409 §5).
func (e *Engine) choosePhase1(sa *ikeSA, sai *SAPayload) (Proposal, error) {
	refusal := &NoProposalError{Phase: "main"}
	for _, p := range sai.Proposals {
		if p.Protocol != ProtoISAKMP {
			continue
		}
		for _, t := range p.Transforms {
			prop, auth, life, ok := decodePhase1(t)
			if !ok || !e.allowedIKE(prop) {
				if prop.Cipher != 0 {
					refusal.offer(offeredIKE(prop), prop.Legacy())
				}
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
	refusal.Allowed = ProposalStrings(e.cfg.IKEProposals)
	return Proposal{}, refusal
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
// §3.2). Unless raw ESP is allowed, one hash is randomised so that both
// sides see a NAT and use UDP encapsulation (our ESP runs in userspace and
// cannot take raw ESP), and always the same way round: the client is the
// one "behind a NAT". An initiator randomises its own hash (strongSwan's
// encap=yes); a responder randomises the hash of the peer's address, so
// the peer believes it is behind a NAT itself (SoftEther does this): stock
// Windows accepts a client behind a NAT by default but refuses a server
// behind one unless a registry value is set (error 809), and charon logs
// "local host is behind NAT", never "remote host is behind NAT". For the
// same reason a responder's own hash is the one the peer computed for our
// address as the peer sees it (its first NAT-D): a gateway that is itself
// behind a static NAT or port forward (a cloud VM's 1:1 NAT) still does
// not look NATed; encapsulation is forced anyway, and the client, which
// believes it is the one behind a NAT, sends the keepalives.
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
		if sa.role == RoleResponder {
			dst = sa.e.random(len(dst))
			if len(sa.peerSeesUs) == len(src) {
				src = sa.peerSeesUs
			}
		} else {
			src = sa.e.random(len(src))
		}
	}
	return []Payload{{t, dst}, {t, src}}
}

// checkNATD compares the peer's NAT-D payloads with what we see (RFC 3947
// §3.2). Without raw ESP the side that is "behind a NAT" is forced as
// natdPayloads announced it: the initiator (us, or the peer when we
// respond).
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
	sa.natLocal = !bytes.Equal(ps[0].Body, me)
	sa.peerSeesUs = append(sa.peerSeesUs[:0], ps[0].Body...)
	them := natdHash(h, sa.ci[:], sa.cr[:], sa.remote.Addr().Unmap().AsSlice(), sa.remote.Port())
	sa.natRemote = true
	for _, p := range ps[1:] {
		if bytes.Equal(p.Body, them) {
			sa.natRemote = false
		}
	}
	if !sa.e.cfg.AllowRawESP {
		if sa.role == RoleResponder {
			sa.natRemote = true
		} else {
			sa.natLocal = true
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
	if !keLenOK(g, len(kp.Body)) {
		return nil, nil, fmt.Errorf("%w: KE of %d bytes for %v", ErrBadKE, len(kp.Body), g)
	}
	return append([]byte{}, kp.Body...), append([]byte{}, np.Body...), nil
}

// respRecvMM3 does the responder's DH and sends KE, Nr and NAT-D. The
// DH runs off the engine's lock when the engine offloads (offload.go).
func (sa *ikeSA) respRecvMM3(m *Message) error {
	gxi, ni, err := keAndNonce(m, sa.prop.Group)
	if err != nil {
		return err
	}
	g, rnd := sa.prop.Group, sa.e.cfg.Rand
	if !sa.e.offloads() {
		sa.gxi, sa.ni = gxi, ni
		sa.peerCR = len(m.All(PayloadCertReq)) > 0
		sa.checkNATD(m)
		dh, gxy, err := dhExchange(g, rnd, gxi)
		if err != nil {
			return err
		}
		return sa.finishMM3(dh, gxy)
	}
	// What checkNATD reads is copied now: m is the caller's buffer.
	peerCR := len(m.All(PayloadCertReq)) > 0
	natd := &Message{Header: m.Header}
	for _, p := range m.Payloads {
		if p.Type == PayloadNATD || p.Type == PayloadNATDDraft {
			natd.Payloads = append(natd.Payloads, Payload{p.Type, append([]byte{}, p.Body...)})
		}
	}
	if err := sa.offload(func() func() error {
		dh, gxy, err := dhExchange(g, rnd, gxi)
		return func() error {
			if err != nil {
				return err
			}
			sa.gxi, sa.ni, sa.peerCR = gxi, ni, peerCR
			sa.checkNATD(natd)
			return sa.finishMM3(dh, gxy)
		}
	}); err != nil {
		return err
	}
	sa.e.stats.CryptoOffloaded.Add(1)
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

// respRecvMM5 authenticates the initiator and answers with MM6. With
// certificates, the chain check (CheckCert: CRL, OCSP), the peer's
// signature and ours run off the engine's lock when it offloads
// (offload.go); PSK checks are a few HMACs and stay inline.
func (sa *ikeSA) respRecvMM5(m *Message) error {
	iv := sa.iv
	ps, err := sa.openMM5(m)
	if err != nil {
		return err
	}
	dm := &Message{Header: m.Header, Payloads: ps} // ps is freshly decrypted: not the caller's buffer
	if sa.auth == AuthPSK || !sa.e.offloads() {
		if err := sa.verifyAuth(dm, false); err != nil {
			return err
		}
		out, err := sa.authPayloads(false, false)
		if err != nil {
			return err
		}
		return sa.finishMM5(dm, out)
	}
	peer, want, err := sa.peerIDHash(dm, false)
	if err != nil {
		return err
	}
	idBody, h, err := sa.ourAuthHash(false)
	if err != nil {
		return err
	}
	key, rnd := sa.e.cfg.Cert.Key, sa.e.cfg.Rand
	if err := sa.offload(func() func() error {
		leaf, err := sa.verifyPeerCert(dm, peer.ID, want)
		var sig []byte
		if err == nil {
			sig, err = sign(key, h, rnd)
		}
		return func() error {
			if err != nil {
				return err
			}
			peer.Cert = leaf
			if err := sa.admitPeer(peer, false); err != nil {
				return err
			}
			return sa.finishMM5(dm, sa.buildAuthPayloads(idBody, h, sig, false))
		}
	}); err != nil {
		sa.iv = iv // not processed: its retransmission must decrypt again
		return err
	}
	sa.e.stats.CryptoOffloaded.Add(1)
	return nil
}

// finishMM5 completes an authenticated responder phase 1: INITIAL-CONTACT,
// MM6 (out), established.
func (sa *ikeSA) finishMM5(dm *Message, out []Payload) error {
	if sa.hasInitialContact(dm) {
		if sa.e.boundIdentity(sa) {
			sa.e.initialContact(sa)
		} else {
			sa.e.stats.InitialContactIgnored.Add(1)
			sa.e.warn("INITIAL-CONTACT ignored: the peer's ID is not bound to the key that authenticated it",
				"peer", sa.remote, "peer_id", sa.peer.ID.String())
		}
	} else if sa.e.samePeerSA(sa) != nil {
		// A new phase 1 without INITIAL-CONTACT from a peer whose SA we
		// still hold: the peer is rekeying it (it deletes the old one).
		sa.e.stats.Rekeys.Add(1)
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

// openMM5 decrypts the initiator's MM5. In PSK mode with
// Config.ResponderPSKs, the key is not known yet (it depends on the ID
// inside): each candidate is tried until MM5 decrypts and HASH_I
// verifies under it; verifyAuth then checks that key is the one bound to
// the ID.
func (sa *ikeSA) openMM5(m *Message) ([]Payload, error) {
	if sa.auth != AuthPSK || sa.e.cfg.ResponderPSKs == nil {
		ps, err := sa.decryptP1(m)
		if err != nil {
			// Garbage after decryption almost always means a wrong PSK.
			return nil, fmt.Errorf("%w: cannot parse decrypted MM5 (wrong pre-shared key?): %v", ErrAuthFailed, err)
		}
		return ps, nil
	}
	cands := sa.e.cfg.ResponderPSKs(sa.remote.Addr())
	if len(cands) > MaxPSKCandidates {
		cands = cands[:MaxPSKCandidates]
	}
	for _, k := range cands {
		if err := sa.keysFor(k); err != nil {
			return nil, err
		}
		ps, err := sa.decryptP1(m)
		if err != nil {
			continue
		}
		idp, ok1 := findPayload(ps, PayloadID)
		hp, ok2 := findPayload(ps, PayloadHash)
		if ok1 && ok2 && hmac.Equal(hp.Body, sa.authHash(true, idp.Body)) {
			sa.psk = k
			sa.logKeys()
			return ps, nil
		}
	}
	return nil, fmt.Errorf("%w: HASH_I verifies under none of the %d pre-shared keys for %v (wrong pre-shared key?)", ErrAuthFailed, len(cands), sa.remote.Addr())
}

func findPayload(ps []Payload, t PayloadType) (Payload, bool) {
	for _, p := range ps {
		if p.Type == t {
			return p, true
		}
	}
	return Payload{}, false
}
