package ike

import (
	"fmt"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

// IKEProposal is one phase 1 transform: cipher, hash (also the PRF) and DH
// group, written strongSwan-style as "aes256-sha256-modp2048".
type IKEProposal struct {
	Cipher  uint16 // RFC 2409 Appendix A: 5 = 3DES-CBC, 7 = AES-CBC
	KeyBits int
	Hash    HashAlg
	Group   Group
}

// String formats p as a strongSwan proposal string.
func (p IKEProposal) String() string {
	c := fmt.Sprintf("aes%d", p.KeyBits)
	if p.Cipher == enc3DES {
		c = "3des"
	}
	return c + "-" + p.Hash.String() + "-" + p.Group.String()
}

// Legacy reports whether the proposal uses something off by default.
func (p IKEProposal) Legacy() bool {
	return p.Cipher == enc3DES || p.Group == GroupMODP1024 || p.Hash == HashMD5
}

// Legacy reports whether the proposal uses something off by default:
// 3DES, HMAC-MD5 or a MODP-1024 PFS group.
func (p ESPProposal) Legacy() bool { return p.Suite.Legacy() || p.PFS == GroupMODP1024 }

func (p IKEProposal) cipher() cipherAlg { return cipherAlg{id: p.Cipher, keyBits: p.KeyBits} }

// ESPProposal is one phase 2 proposal: an ESP suite and an optional PFS
// group, written strongSwan-style as "aes128gcm16-ecp256" or "aes256-sha1".
type ESPProposal struct {
	Suite esp.Suite
	PFS   Group // GroupNone for no PFS
}

// String formats p as a strongSwan proposal string.
func (p ESPProposal) String() string {
	if p.PFS == GroupNone {
		return p.Suite.String()
	}
	return p.Suite.String() + "-" + p.PFS.String()
}

// ParseIKEProposal parses "cipher-hash-group" (e.g. "aes256-sha256-modp2048",
// "aes128-sha1-ecp256", "3des-sha1-modp1024").
func ParseIKEProposal(s string) (IKEProposal, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	if len(parts) != 3 {
		return IKEProposal{}, fmt.Errorf("%w: %q: want cipher-hash-group", ErrBadProposalString, s)
	}
	var p IKEProposal
	switch parts[0] {
	case "aes", "aes128":
		p.Cipher, p.KeyBits = encAESCBC, 128
	case "aes192":
		p.Cipher, p.KeyBits = encAESCBC, 192
	case "aes256":
		p.Cipher, p.KeyBits = encAESCBC, 256
	case "3des":
		p.Cipher, p.KeyBits = enc3DES, 192
	default:
		return IKEProposal{}, fmt.Errorf("%w: %q: unknown cipher %q", ErrBadProposalString, s, parts[0])
	}
	h, ok := parseHash(parts[1])
	if !ok {
		return IKEProposal{}, fmt.Errorf("%w: %q: unknown hash %q", ErrBadProposalString, s, parts[1])
	}
	p.Hash = h
	g, ok := parseGroup(parts[2])
	if !ok || g == GroupNone {
		return IKEProposal{}, fmt.Errorf("%w: %q: unknown group %q", ErrBadProposalString, s, parts[2])
	}
	p.Group = g
	return p, nil
}

// ParseESPProposal parses "aes128gcm16[-group]" or "cipher-integ[-group]".
func ParseESPProposal(s string) (ESPProposal, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	var p ESPProposal
	bad := func(why string) (ESPProposal, error) {
		return ESPProposal{}, fmt.Errorf("%w: %q: %s", ErrBadProposalString, s, why)
	}
	if len(parts) == 0 {
		return bad("empty")
	}
	switch parts[0] {
	case "aes128gcm16", "aes128gcm":
		p.Suite = esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}
	case "aes256gcm16", "aes256gcm":
		p.Suite = esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 256}
	case "aes", "aes128":
		p.Suite = esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128}
	case "aes256":
		p.Suite = esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 256}
	case "3des":
		p.Suite = esp.Suite{Cipher: esp.Cipher3DES, KeyBits: 192}
	default:
		return bad("unknown cipher " + parts[0])
	}
	rest := parts[1:]
	if p.Suite.Cipher != esp.CipherAESGCM16 {
		if len(rest) == 0 {
			return bad("missing integrity")
		}
		switch rest[0] {
		case "md5":
			p.Suite.Integ = esp.IntegHMACMD5_96
		case "sha1":
			p.Suite.Integ = esp.IntegHMACSHA1_96
		case "sha256":
			p.Suite.Integ = esp.IntegHMACSHA256_128
		case "sha384":
			p.Suite.Integ = esp.IntegHMACSHA384_192
		case "sha512":
			p.Suite.Integ = esp.IntegHMACSHA512_256
		default:
			return bad("unknown integrity " + rest[0])
		}
		rest = rest[1:]
	}
	if len(rest) > 1 {
		return bad("trailing tokens")
	}
	if len(rest) == 1 {
		g, ok := parseGroup(rest[0])
		if !ok {
			return bad("unknown group " + rest[0])
		}
		p.PFS = g
	}
	if err := p.Suite.Validate(); err != nil {
		return bad(err.Error())
	}
	return p, nil
}

func parseHash(s string) (HashAlg, bool) {
	switch s {
	case "md5":
		return HashMD5, true
	case "sha1", "sha":
		return HashSHA1, true
	case "sha256", "sha2_256":
		return HashSHA256, true
	case "sha384", "sha2_384":
		return HashSHA384, true
	case "sha512", "sha2_512":
		return HashSHA512, true
	}
	return 0, false
}

func parseGroup(s string) (Group, bool) {
	if s == "x25519" {
		return GroupCurve25519, true
	}
	for _, g := range []Group{GroupNone, GroupMODP1024, GroupMODP2048, GroupMODP3072, GroupMODP4096, GroupECP256, GroupECP384, GroupCurve25519} {
		if g.String() == s {
			return g, true
		}
	}
	return 0, false
}

// MustProposals parses a comma-separated list of IKE proposal strings and
// panics on error; for tests and static defaults.
func MustProposals(s string) []IKEProposal {
	var out []IKEProposal
	for _, f := range strings.Split(s, ",") {
		p, err := ParseIKEProposal(f)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

// MustESPProposals parses a comma-separated list of ESP proposal strings
// and panics on error.
func MustESPProposals(s string) []ESPProposal {
	var out []ESPProposal
	for _, f := range strings.Split(s, ",") {
		p, err := ParseESPProposal(f)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

// The one default proposal policy of the project: the gateway accepts it,
// the bridge proposes it, and configs/gateway.yaml shows it. It accepts
// what current clients send by default in IKEv1 for L2TP/IPsec:
//
//   - strongSwan (charon) and libreswan: AES with SHA-2 and MODP-2048+,
//     ECP-256/384 or Curve25519 (charon's IKEv1 default offer is
//     aes128-sha256-curve25519); this project's bridge: its first entry
//     (aes256-sha256-ecp256);
//   - macOS/iOS (racoon-based L2TP): aes256-sha256-modp2048 first, then
//     AES with SHA-1 and MODP-2048;
//   - Windows 10/11 (RasMan L2TP): AES with HMAC-SHA1 and ECP-384,
//     ECP-256 or MODP-2048 in phase 1, AES-CBC with HMAC-SHA1 in phase 2.
//
// Elliptic-curve groups come first in every list (the order is what the
// bridge offers; as responder we take the initiator's order, RFC 2409 §5):
// ECP and Curve25519 run on crypto/ecdh (constant time), MODP on
// math/big, which is not constant time (a local timing side channel on
// the DH private value; MODP stays for clients that offer nothing else).
//
// HMAC-SHA1 is kept (only) with AES and a 2048-bit-or-stronger group:
// Windows offers no SHA-2 integrity for L2TP, and HMAC (as PRF and ESP
// integrity) does not rest on SHA-1's collision resistance (RFC 8247
// §3.1.3 and RFC 8221 §6 still list HMAC-SHA1 as MUST-). Everything
// weaker is in LegacyIKEProposals / LegacyESPProposals, which a deployment
// adds only on explicit opt-in (the gateway's proposals.allow_legacy).
const (
	defaultIKE = "aes256-sha256-ecp256,aes128-sha256-ecp256,aes128-sha256-curve25519,aes256-sha256-curve25519,aes256-sha384-ecp384," +
		"aes256-sha256-modp2048,aes128-sha256-modp2048,aes256-sha256-modp3072,aes256-sha512-modp4096,aes256-sha384-modp2048,aes256-sha512-modp2048," +
		"aes256-sha1-ecp384,aes128-sha1-ecp256,aes256-sha1-ecp256,aes256-sha1-modp2048,aes128-sha1-modp2048"
	defaultESP = "aes128gcm16,aes256gcm16,aes256-sha256,aes128-sha256,aes256-sha384,aes256-sha512,aes256-sha1,aes128-sha1," +
		"aes128gcm16-ecp256,aes256gcm16-ecp384,aes128gcm16-modp2048,aes256gcm16-modp2048,aes256-sha256-modp2048,aes128-sha256-modp2048,aes128-sha1-modp2048"
	// Legacy: MODP-1024 (Android <= 11's racoon offers nothing else, old
	// Windows without NegotiateDH2048_AES256), 3DES (Windows 7/8, old
	// macOS), HMAC-MD5 (very old racoon). MODP-1024 is within reach of a
	// precomputation attack (Logjam), 3DES has a 64-bit block (Sweet32).
	legacyIKE = "aes256-sha1-modp1024,aes128-sha1-modp1024,3des-sha1-modp2048,3des-sha1-modp1024,aes128-md5-modp1024,3des-md5-modp1024"
	legacyESP = "3des-sha1,aes128-md5,3des-md5,aes128-sha1-modp1024,aes256-sha1-modp1024"
)

// DefaultIKEProposals is the phase 1 policy we propose and accept by
// default (see defaultIKE above for who sends what).
func DefaultIKEProposals() []IKEProposal { return MustProposals(defaultIKE) }

// DefaultESPProposals is the default phase 2 policy: without PFS (Windows
// and macOS L2TP clients use none) and with the PFS groups strongSwan
// clients add.
func DefaultESPProposals() []ESPProposal { return MustESPProposals(defaultESP) }

// LegacyIKEProposals are the phase 1 transforms old clients need (Android
// <= 11, Windows before the MODP-2048 registry switch, old macOS); a
// policy includes them only on explicit opt-in. Each has Legacy() true.
func LegacyIKEProposals() []IKEProposal { return MustProposals(legacyIKE) }

// LegacyESPProposals are the phase 2 counterparts of LegacyIKEProposals.
func LegacyESPProposals() []ESPProposal { return MustESPProposals(legacyESP) }

// ProposalStrings formats proposals as strongSwan strings.
func ProposalStrings[P fmt.Stringer](ps []P) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// phase1Transform encodes p as an IKE transform (RFC 2409 Appendix A).
func phase1Transform(num uint8, p IKEProposal, auth AuthMethod, life time.Duration) Transform {
	attrs := []Attribute{basic(attrEncryption, p.Cipher)}
	if p.Cipher == encAESCBC {
		attrs = append(attrs, basic(attrKeyLength, uint16(p.KeyBits)))
	}
	attrs = append(attrs,
		basic(attrHash, uint16(p.Hash)),
		basic(attrAuthMethod, uint16(auth)),
		basic(attrGroupDesc, uint16(p.Group)),
		basic(attrLifeType, lifeSeconds),
		lifeAttr(attrLifeDur, uint64(life/time.Second)))
	return Transform{Num: num, ID: TransformKeyIKE, Attrs: attrs}
}

// decodePhase1 reads an IKE transform into a proposal, auth method and
// lifetime (0 when none is given).
func decodePhase1(t Transform) (IKEProposal, AuthMethod, time.Duration, bool) {
	var p IKEProposal
	var auth AuthMethod
	var life time.Duration
	if t.ID != TransformKeyIKE {
		return p, 0, 0, false
	}
	lifeType := uint64(0)
	for _, a := range t.Attrs {
		switch a.Type {
		case attrEncryption:
			p.Cipher = uint16(a.Value)
		case attrKeyLength:
			p.KeyBits = int(a.Value)
		case attrHash:
			p.Hash = HashAlg(a.Value)
		case attrAuthMethod:
			auth = AuthMethod(a.Value)
		case attrGroupDesc:
			p.Group = Group(a.Value)
		case attrLifeType:
			lifeType = a.Value
		case attrLifeDur:
			if lifeType == uint64(lifeSeconds) && a.Value < 1<<31 {
				life = time.Duration(a.Value) * time.Second
			}
		default:
			return p, 0, 0, false // unknown attribute: reject the transform
		}
	}
	if p.Cipher == enc3DES {
		p.KeyBits = 192
	}
	return p, auth, life, true
}

// phase2Transform encodes an ESP proposal (RFC 2407 §4.4.4, §4.5).
func phase2Transform(num uint8, p ESPProposal, encap uint16, life time.Duration, lifeKB uint64) Transform {
	attrs := []Attribute{
		basic(attr2LifeType, lifeSeconds), lifeAttr(attr2LifeDur, uint64(life/time.Second)),
	}
	if lifeKB > 0 {
		attrs = append(attrs, basic(attr2LifeType, lifeKilobytes), lifeAttr(attr2LifeDur, lifeKB))
	}
	attrs = append(attrs, basic(attr2EncapMode, encap))
	if p.PFS != GroupNone {
		attrs = append(attrs, basic(attr2GroupDesc, uint16(p.PFS)))
	}
	if p.Suite.Integ != esp.IntegNone {
		attrs = append(attrs, basic(attr2AuthAlg, uint16(p.Suite.Integ)))
	}
	if p.Suite.Cipher != esp.Cipher3DES {
		attrs = append(attrs, basic(attr2KeyLength, uint16(p.Suite.KeyBits)))
	}
	return Transform{Num: num, ID: uint8(p.Suite.Cipher), Attrs: attrs}
}

// phase2Attrs is a decoded ESP transform.
type phase2Attrs struct {
	prop   ESPProposal
	encap  uint16
	life   time.Duration
	lifeKB uint64
}

func decodePhase2(t Transform) (phase2Attrs, bool) {
	var r phase2Attrs
	r.prop.Suite.Cipher = esp.Cipher(t.ID)
	lifeType := uint64(0)
	for _, a := range t.Attrs {
		switch a.Type {
		case attr2LifeType:
			lifeType = a.Value
		case attr2LifeDur:
			switch lifeType {
			case uint64(lifeSeconds):
				if a.Value < 1<<31 {
					r.life = time.Duration(a.Value) * time.Second
				}
			case uint64(lifeKilobytes):
				r.lifeKB = a.Value
			}
		case attr2GroupDesc:
			r.prop.PFS = Group(a.Value)
		case attr2EncapMode:
			r.encap = uint16(a.Value)
		case attr2AuthAlg:
			r.prop.Suite.Integ = esp.Integ(a.Value)
		case attr2KeyLength:
			r.prop.Suite.KeyBits = int(a.Value)
		default:
			return r, false
		}
	}
	if r.prop.Suite.Cipher == esp.Cipher3DES {
		r.prop.Suite.KeyBits = 192
	}
	return r, r.prop.Suite.Validate() == nil
}
