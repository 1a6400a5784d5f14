package radius

// Test-side MS-CHAPv2 (RFC 2759 §8) composed from crypto/des, crypto/sha1
// and x/crypto/md4, to play the PPP client against FreeRADIUS. The
// gateway itself never computes these: it relays them.

import (
	"crypto/des"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"unicode/utf16"

	//lint:ignore SA1019 MS-CHAPv2 (RFC 2759) is defined with MD4
	"golang.org/x/crypto/md4"
)

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

func challengeHash(peer, auth []byte, user string) []byte {
	h := sha1.New()
	h.Write(peer)
	h.Write(auth)
	h.Write([]byte(user))
	return h.Sum(nil)[:8]
}

func desKey(in []byte) []byte {
	return []byte{in[0] & 0xfe, in[0]<<7 | in[1]>>1, in[1]<<6 | in[2]>>2, in[2]<<5 | in[3]>>3,
		in[3]<<4 | in[4]>>4, in[4]<<3 | in[5]>>5, in[5]<<2 | in[6]>>6, in[6] << 1}
}

func ntResponse(auth, peer []byte, user, password string) []byte {
	ch := challengeHash(peer, auth, user)
	z := append(ntPasswordHash(password), 0, 0, 0, 0, 0)
	out := make([]byte, 24)
	for i := 0; i < 3; i++ {
		c, err := des.NewCipher(desKey(z[7*i : 7*i+7]))
		if err != nil {
			panic(err)
		}
		c.Encrypt(out[8*i:], ch)
	}
	return out
}

func authenticatorResponse(auth, peer, nt []byte, user, password string) string {
	h := md4.New()
	h.Write(ntPasswordHash(password))
	hh := h.Sum(nil)
	s := sha1.New()
	s.Write(hh)
	s.Write(nt)
	s.Write([]byte("Magic server to client signing constant"))
	d := s.Sum(nil)
	s = sha1.New()
	s.Write(d)
	s.Write(challengeHash(peer, auth, user))
	s.Write([]byte("Pad to make it do more than one iteration"))
	return "S=" + strings.ToUpper(hex.EncodeToString(s.Sum(nil)))
}
