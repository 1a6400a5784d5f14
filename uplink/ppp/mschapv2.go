package ppp

import (
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"unicode/utf16"

	//lint:ignore SA1019 MS-CHAPv2 (RFC 2759) is defined over MD4; no choice for interop
	"golang.org/x/crypto/md4"
)

// This file holds the CHAP-MD5 (RFC 1994 §4.1) and MS-CHAPv2 (RFC 2759
// §8) computations, composed from the standard library's DES, SHA-1 and
// MD5 and x/crypto's MD4. Verified by RFC 2759 §9.2's known answers.

// CHAPMD5Response returns MD5(id || secret || challenge) (RFC 1994 §4.1).
func CHAPMD5Response(id byte, secret, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write(secret)
	h.Write(challenge)
	return h.Sum(nil)
}

// ntPasswordHash is MD4 of the UTF-16LE password (RFC 2759 §8.3).
func ntPasswordHash(password string) []byte {
	u := utf16.Encode([]rune(password))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		b[2*i], b[2*i+1] = byte(r), byte(r>>8)
	}
	h := md4.New()
	h.Write(b)
	return h.Sum(nil)
}

// NTPasswordHash exposes the RFC 2759 §8.3 hash (for verifiers that store
// hashes rather than passwords).
func NTPasswordHash(password string) []byte { return ntPasswordHash(password) }

// challengeHash is the first 8 bytes of SHA1(peer || auth || username)
// (RFC 2759 §8.2). The user name is stripped of any domain by the caller.
func challengeHash(peerChallenge, authChallenge []byte, username string) []byte {
	h := sha1.New()
	h.Write(peerChallenge)
	h.Write(authChallenge)
	h.Write([]byte(username))
	return h.Sum(nil)[:8]
}

// desKey expands 7 key bytes to an 8-byte DES key with parity bits
// (RFC 2759 §8.6).
func desKey(k []byte) []byte {
	out := make([]byte, 8)
	out[0] = k[0]
	out[1] = k[0]<<7 | k[1]>>1
	out[2] = k[1]<<6 | k[2]>>2
	out[3] = k[2]<<5 | k[3]>>3
	out[4] = k[3]<<4 | k[4]>>4
	out[5] = k[4]<<3 | k[5]>>5
	out[6] = k[5]<<2 | k[6]>>6
	out[7] = k[6] << 1
	for i := range out {
		out[i] &= 0xfe // DES ignores the parity bit
	}
	return out
}

// challengeResponse DES-encrypts the 8-byte challenge under the three
// 7-byte thirds of the zero-padded 16-byte hash (RFC 2759 §8.5).
func challengeResponse(challenge, hash []byte) []byte {
	var z [21]byte
	copy(z[:], hash)
	out := make([]byte, 24)
	for i := 0; i < 3; i++ {
		c, _ := des.NewCipher(desKey(z[7*i : 7*i+7]))
		c.Encrypt(out[8*i:], challenge)
	}
	return out
}

// MSCHAPv2NTResponse computes the 24-byte NT-Response (RFC 2759 §8.1).
func MSCHAPv2NTResponse(authChallenge, peerChallenge []byte, username, password string) []byte {
	ch := challengeHash(peerChallenge, authChallenge, stripDomain(username))
	return challengeResponse(ch, ntPasswordHash(password))
}

var (
	magic1 = []byte("Magic server to client signing constant")
	magic2 = []byte("Pad to make it do more than one iteration")
)

// MSCHAPv2AuthenticatorResponse computes the "S=<40 hex>" string the
// authenticator returns in Success (RFC 2759 §8.7) from the password hash
// (NTPasswordHash).
func MSCHAPv2AuthenticatorResponse(pwHash, ntResponse, peerChallenge, authChallenge []byte, username string) string {
	h4 := md4.New()
	h4.Write(pwHash)
	hh := h4.Sum(nil)
	h := sha1.New()
	h.Write(hh)
	h.Write(ntResponse)
	h.Write(magic1)
	digest := h.Sum(nil)
	ch := challengeHash(peerChallenge, authChallenge, stripDomain(username))
	h = sha1.New()
	h.Write(digest)
	h.Write(ch)
	h.Write(magic2)
	return "S=" + strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
}

// MSCHAPv2Verify checks an NT-Response against a password hash and, if it
// matches, returns the authenticator response string.
func MSCHAPv2Verify(pwHash, authChallenge, peerChallenge, ntResponse []byte, username string) (string, bool) {
	want := challengeResponse(challengeHash(peerChallenge, authChallenge, stripDomain(username)), pwHash)
	if subtle.ConstantTimeCompare(want, ntResponse) != 1 {
		return "", false
	}
	return MSCHAPv2AuthenticatorResponse(pwHash, ntResponse, peerChallenge, authChallenge, username), true
}

// stripDomain drops a "DOMAIN\" prefix (RFC 2759 §4: the user name used in
// the hash has no domain).
func stripDomain(u string) string {
	if i := strings.LastIndexByte(u, '\\'); i >= 0 {
		return u[i+1:]
	}
	return u
}
