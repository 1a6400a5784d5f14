package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// certAuthMethod maps our key to the phase 1 auth method (RFC 2409
// Appendix A, RFC 4754 §3).
func certAuthMethod(key any) (AuthMethod, bool) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return AuthRSASig, true
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return AuthECDSA256, true
		case elliptic.P384():
			return AuthECDSA384, true
		}
	}
	return 0, false
}

// certReqs asks for certificates issued by the configured CAs (RFC 2408
// §3.10); an empty request means any CA.
func (sa *ikeSA) certReqs() []Payload {
	if len(sa.e.cfg.CertReqSubjects) == 0 {
		return []Payload{{PayloadCertReq, CertPayload{Encoding: certEncodingX509Sig}.Append(nil)}}
	}
	var ps []Payload
	for _, s := range sa.e.cfg.CertReqSubjects {
		ps = append(ps, Payload{PayloadCertReq, CertPayload{Encoding: certEncodingX509Sig, Data: s}.Append(nil)})
	}
	return ps
}

// localID is our phase 1 identity.
func (sa *ikeSA) localID() (Identification, error) {
	if id := sa.e.cfg.LocalID; id != nil {
		return *id, nil
	}
	if sa.auth != AuthPSK {
		leaf, err := x509.ParseCertificate(sa.e.cfg.Cert.Chain[0])
		if err != nil {
			return Identification{}, fmt.Errorf("ike: our certificate: %w", err)
		}
		return Identification{Type: IDDERASN1DN, Data: leaf.RawSubject}, nil
	}
	// RFC 2407 §4.6.2: protocol and port zero (or UDP/500) in phase 1.
	local := sa.local.Addr()
	if local.IsUnspecified() && sa.e.cfg.LocalAddrFor != nil {
		// A wildcard socket: present the address the peer talks to, never "::".
		if a, ok := sa.e.cfg.LocalAddrFor(sa.remote.Addr()); ok {
			local = a
		}
	}
	return AddrID(local.Unmap(), 0, 0), nil
}

// authHash computes HASH_I (forInitiator) or HASH_R (RFC 2409 §5):
//
//	HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
//	HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)
//
// For ECDSA (RFC 4754 §7) the prf is HMAC with the hash of the curve's
// group (SHA-256 for P-256, SHA-384 for P-384), not the negotiated hash:
// strongSwan and Windows sign a SHA-256 HASH_I under a SHA-1 proposal.
func (sa *ikeSA) authHash(forInitiator bool, idBody []byte) []byte {
	h := authPRFHash(sa.auth, sa.prop.Hash)
	if forInitiator {
		return prf(h, sa.keys.skeyid, sa.gxi, sa.gxr, sa.ci[:], sa.cr[:], sa.saBody, idBody)
	}
	return prf(h, sa.keys.skeyid, sa.gxr, sa.gxi, sa.cr[:], sa.ci[:], sa.saBody, idBody)
}

// authPRFHash is the hash of the prf computing HASH_I/HASH_R: the
// negotiated one, except for the ECDSA methods whose curve fixes it
// (RFC 4754 §7).
func authPRFHash(auth AuthMethod, negotiated HashAlg) HashAlg {
	switch auth {
	case AuthECDSA256:
		return HashSHA256
	case AuthECDSA384:
		return HashSHA384
	}
	return negotiated
}

// authPayloads builds MM5 (initiator) or MM6: ID, then HASH for PSK or
// CERT(s) and SIG for signatures, then optionally INITIAL-CONTACT.
func (sa *ikeSA) authPayloads(initiator, initialContact bool) ([]Payload, error) {
	idBody, h, err := sa.ourAuthHash(initiator)
	if err != nil {
		return nil, err
	}
	var sig []byte
	if sa.auth != AuthPSK {
		if sig, err = sign(sa.e.cfg.Cert.Key, h, sa.e.cfg.Rand); err != nil {
			return nil, err
		}
	}
	return sa.buildAuthPayloads(idBody, h, sig, initialContact), nil
}

// ourAuthHash is our ID payload body and the HASH_I/HASH_R over it.
func (sa *ikeSA) ourAuthHash(initiator bool) (idBody, h []byte, err error) {
	id, err := sa.localID()
	if err != nil {
		return nil, nil, err
	}
	idBody = id.Append(nil)
	return idBody, sa.authHash(initiator, idBody), nil
}

// buildAuthPayloads assembles MM5/MM6 from our ID, HASH (PSK) or signature.
func (sa *ikeSA) buildAuthPayloads(idBody, h, sig []byte, initialContact bool) []Payload {
	ps := []Payload{{PayloadID, idBody}}
	if sa.auth == AuthPSK {
		ps = append(ps, Payload{PayloadHash, h})
	} else {
		for _, der := range sa.e.cfg.Cert.Chain {
			ps = append(ps, Payload{PayloadCert, CertPayload{Encoding: certEncodingX509Sig, Data: der}.Append(nil)})
		}
		ps = append(ps, Payload{PayloadSig, sig})
	}
	if initialContact {
		n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyInitialContact, SPI: append(sa.ci[:], sa.cr[:]...)}
		ps = append(ps, Payload{PayloadNotify, n.Append(nil)})
	}
	return ps
}

// sign signs HASH_I/HASH_R as strongSwan and Windows expect: RSA PKCS#1
// v1.5 without a DigestInfo (RFC 2409 §5.1), ECDSA as r||s (RFC 4754 §7).
func sign(key any, h []byte, rand interface{ Read([]byte) (int, error) }) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return rsa.SignPKCS1v15(rand, k, crypto.Hash(0), h)
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand, k, h)
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*n)
		r.FillBytes(out[:n])
		s.FillBytes(out[n:])
		return out, nil
	}
	return nil, errors.New("ike: unsupported private key type")
}

func verifySig(pub any, h, sig []byte) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.Hash(0), h, sig) == nil
	case *ecdsa.PublicKey:
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false
		}
		r := new(big.Int).SetBytes(sig[:n])
		s := new(big.Int).SetBytes(sig[n:])
		return ecdsa.Verify(k, h, r, s)
	}
	return false
}

// verifyAuth checks the peer's ID and HASH or SIG in MM5/MM6 and the
// identity policy.
func (sa *ikeSA) verifyAuth(m *Message, peerIsResponder bool) error {
	peer, want, err := sa.peerIDHash(m, peerIsResponder)
	if err != nil {
		return err
	}
	if sa.auth == AuthPSK {
		hp, ok := m.Find(PayloadHash)
		if !ok || !hmac.Equal(hp.Body, want) {
			return fmt.Errorf("%w: HASH does not verify (wrong pre-shared key?)", ErrAuthFailed)
		}
		if f := sa.e.cfg.PSKForID; f != nil && !peerIsResponder && sa.e.cfg.ResponderPSKs != nil {
			if k, ok := f(peer.ID, sa.remote.Addr()); !ok || !hmac.Equal(k, sa.psk) {
				sa.e.stats.KeyNotBound.Add(1)
				return fmt.Errorf("%w: %w: ID %s authenticated with a pre-shared key that is not the one bound to it", ErrAuthFailed, ErrKeyNotBound, peer.ID.String())
			}
		}
	} else {
		if peer.Cert, err = sa.verifyPeerCert(m, peer.ID, want); err != nil {
			return err
		}
	}
	return sa.admitPeer(peer, peerIsResponder)
}

// peerIDHash reads the peer's ID payload and computes the HASH_I/HASH_R
// its HASH or SIG must carry.
func (sa *ikeSA) peerIDHash(m *Message, peerIsResponder bool) (Identity, []byte, error) {
	idp, ok := m.Find(PayloadID)
	if !ok {
		return Identity{}, nil, fmt.Errorf("%w: no ID payload", ErrAuthFailed)
	}
	id, err := ParseID(idp.Body)
	if err != nil {
		return Identity{}, nil, fmt.Errorf("%w: %v", ErrAuthFailed, err)
	}
	peer := Identity{ID: Identification{Type: id.Type, Protocol: id.Protocol, Port: id.Port, Data: append([]byte{}, id.Data...)}}
	return peer, sa.authHash(!peerIsResponder, idp.Body), nil
}

// verifyPeerCert verifies the peer's certificate chain, CheckCert, its
// signature over want and that id names the certificate. It reads only
// m and the engine's fixed configuration, so it may run off the lock
// (offload.go).
func (sa *ikeSA) verifyPeerCert(m *Message, id Identification, want []byte) (*x509.Certificate, error) {
	leaf, err := sa.verifyCerts(m)
	if err != nil {
		return nil, err
	}
	sp, ok := m.Find(PayloadSig)
	if !ok || !verifySig(leaf.PublicKey, want, sp.Body) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrAuthFailed)
	}
	if !idMatchesCert(id, leaf) {
		return nil, fmt.Errorf("%w: ID payload does not match the certificate", ErrInvalidID)
	}
	return leaf, nil
}

// admitPeer applies the identity policy to an authenticated peer and
// records it.
func (sa *ikeSA) admitPeer(peer Identity, peerIsResponder bool) error {
	if r := sa.e.cfg.RemoteID; r != nil && peerIsResponder && (r.Type != peer.ID.Type || !bytes.Equal(r.Data, peer.ID.Data)) {
		return fmt.Errorf("%w: peer is not the configured remote identity", ErrInvalidID)
	}
	if f := sa.e.cfg.AllowIdentity; f != nil && !f(peer) {
		return fmt.Errorf("%w: identity not allowed by policy", ErrInvalidID)
	}
	sa.peer = peer
	return nil
}

// verifyCerts validates the peer's CERT payloads against the configured CA
// pool: the first is the leaf, the others intermediates.
func (sa *ikeSA) verifyCerts(m *Message) (*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, p := range m.All(PayloadCert) {
		c, err := ParseCert(p.Body)
		if err != nil || c.Encoding != certEncodingX509Sig {
			return nil, fmt.Errorf("%w: unsupported certificate encoding", ErrInvalidCert)
		}
		x, err := x509.ParseCertificate(c.Data)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidCert, err)
		}
		certs = append(certs, x)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: peer sent no certificate", ErrInvalidCert)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots: sa.e.cfg.CAs, Intermediates: inter, CurrentTime: sa.e.cfg.Clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCert, err)
	}
	if f := sa.e.cfg.CheckCert; f != nil {
		if err := f(certs[0], chains[0]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidCert, err)
		}
	}
	if err := sa.checkGateway(certs[0], chains[0]); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// idMatchesCert checks the ID payload names the certificate: its subject
// DN, or a subjectAltName (DNS, e-mail, IP).
func idMatchesCert(id Identification, c *x509.Certificate) bool {
	switch id.Type {
	case IDDERASN1DN:
		return bytes.Equal(id.Data, c.RawSubject)
	case IDFQDN:
		for _, n := range c.DNSNames {
			if strings.EqualFold(n, string(id.Data)) {
				return true
			}
		}
	case IDUserFQDN:
		for _, n := range c.EmailAddresses {
			if strings.EqualFold(n, string(id.Data)) {
				return true
			}
		}
	case IDIPv4Addr, IDIPv6Addr:
		a, ok := netip.AddrFromSlice(id.Data)
		for _, ip := range c.IPAddresses {
			if b, ok2 := netip.AddrFromSlice(ip); ok && ok2 && b.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}
