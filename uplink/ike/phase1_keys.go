package ike

import (
	"io"
)

// dhExchange makes our ephemeral key for g and the shared secret with the
// peer's public value: the expensive part of MM3/MM4 (pure, no SA state).
func dhExchange(g Group, rnd io.Reader, peer []byte) (*dhKey, []byte, error) {
	dh, err := newDH(g, rnd)
	if err != nil {
		return nil, nil, err
	}
	gxy, err := dh.shared(peer)
	if err != nil {
		return nil, nil, err
	}
	return dh, gxy, nil
}

// finishMM3 applies the responder's DH result: keys, then MM4.
func (sa *ikeSA) finishMM3(dh *dhKey, gxy []byte) error {
	sa.dh, sa.gxr, sa.gxy = dh, dh.pub, gxy
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
	if err := sa.keysFor(sa.psk); err != nil {
		return err
	}
	if sa.role == RoleResponder && sa.auth == AuthPSK && sa.e.cfg.ResponderPSKs != nil {
		// The key is known only once MM5 verifies under one of the
		// candidates (respRecvMM5 logs it then): a line for a guess would
		// be a wrong or duplicate key-log entry for these cookies.
		return nil
	}
	sa.logKeys()
	return nil
}

// keysFor derives the phase 1 keys and first IV with psk (ignored for
// signatures).
func (sa *ikeSA) keysFor(psk []byte) error {
	sk := skeyid(sa.prop.Hash, sa.auth, psk, sa.ni, sa.nr, sa.gxy)
	c := sa.prop.cipher()
	sa.keys = derivePhase1(sa.prop.Hash, sk, sa.gxy, sa.ci[:], sa.cr[:], c.keyBits/8)
	blk, err := c.block(sa.keys.enc)
	if err != nil {
		return err
	}
	sa.blk = blk
	sa.iv = phase1IV(sa.prop.Hash, sa.gxi, sa.gxr, c.blockSize())
	return nil
}

func (sa *ikeSA) logKeys() {
	if sa.e.cfg.OnKeys != nil {
		sa.e.cfg.OnKeys(sa.ci, sa.cr, append([]byte{}, sa.keys.enc...))
	}
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
