package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
)

// New returns the hash constructor, or nil if unsupported.
func (h HashAlg) New() func() hash.Hash {
	switch h {
	case HashMD5:
		return md5.New
	case HashSHA1:
		return sha1.New
	case HashSHA256:
		return sha256.New
	case HashSHA384:
		return sha512.New384
	case HashSHA512:
		return sha512.New
	}
	return nil
}

// String names the hash as strongSwan does.
func (h HashAlg) String() string {
	switch h {
	case HashMD5:
		return "md5"
	case HashSHA1:
		return "sha1"
	case HashSHA256:
		return "sha256"
	case HashSHA384:
		return "sha384"
	case HashSHA512:
		return "sha512"
	}
	return fmt.Sprintf("hash%d", uint16(h))
}

// prf is the IKEv1 pseudo-random function: HMAC with the negotiated hash
// (RFC 2409 §5: "prf ... the HMAC version of the negotiated hash").
func prf(h HashAlg, key []byte, data ...[]byte) []byte {
	m := hmac.New(h.New(), key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// skeyid computes SKEYID (RFC 2409 §5): prf(pre-shared-key, Ni_b | Nr_b)
// for PSK, prf(Ni_b | Nr_b, g^xy) for signatures.
func skeyid(h HashAlg, auth AuthMethod, psk, ni, nr, gxy []byte) []byte {
	if auth == AuthPSK {
		return prf(h, psk, ni, nr)
	}
	return prf(h, append(append([]byte{}, ni...), nr...), gxy)
}

// phase1Keys holds the keying material of an ISAKMP SA (RFC 2409 §5).
type phase1Keys struct {
	skeyid, d, a, e []byte
	enc             []byte // encryption key expanded from SKEYID_e
}

// derivePhase1 computes SKEYID_d, SKEYID_a, SKEYID_e and the cipher key
// (RFC 2409 §5 and Appendix B key expansion when SKEYID_e is too short).
func derivePhase1(h HashAlg, sk, gxy, ci, cr []byte, keyLen int) phase1Keys {
	k := phase1Keys{skeyid: sk}
	k.d = prf(h, sk, gxy, ci, cr, []byte{0})
	k.a = prf(h, sk, k.d, gxy, ci, cr, []byte{1})
	k.e = prf(h, sk, k.a, gxy, ci, cr, []byte{2})
	k.enc = expandKey(h, k.e, keyLen)
	return k
}

// expandKey implements RFC 2409 Appendix B: if SKEYID_e is shorter than
// the key, Ka = K1 | K2 | ... with K1 = prf(SKEYID_e, 0) and
// Kn = prf(SKEYID_e, Kn-1); otherwise the leading bytes of SKEYID_e.
func expandKey(h HashAlg, e []byte, n int) []byte {
	if len(e) >= n {
		return append([]byte{}, e[:n]...)
	}
	var out []byte
	k := prf(h, e, []byte{0})
	out = append(out, k...)
	for len(out) < n {
		k = prf(h, e, k)
		out = append(out, k...)
	}
	return out[:n]
}

// keymat computes KEYMAT for one SA direction (RFC 2409 §5.5): with PFS
// gqm is the Quick Mode g^xy, otherwise nil.
// KEYMAT = K1 | K2 | ...; K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
// Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b).
func keymat(h HashAlg, d, gqm []byte, proto uint8, spi uint32, ni, nr []byte, n int) []byte {
	var spiB [4]byte
	binary.BigEndian.PutUint32(spiB[:], spi)
	var out, prev []byte
	for len(out) < n {
		prev = prf(h, d, prev, gqm, []byte{proto}, spiB[:], ni, nr)
		out = append(out, prev...)
	}
	return out[:n]
}

// IKE phase 1 ciphers (RFC 2409 Appendix A values).
type cipherAlg struct {
	id      uint16
	keyBits int
}

func (c cipherAlg) blockSize() int {
	if c.id == enc3DES {
		return des.BlockSize
	}
	return aes.BlockSize
}

func (c cipherAlg) block(key []byte) (cipher.Block, error) {
	if c.id == enc3DES {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}

// phase1IV is the first IV of phase 1: hash(g^xi | g^xr) truncated to the
// block size (RFC 2409 Appendix B).
func phase1IV(h HashAlg, gxi, gxr []byte, bs int) []byte {
	m := h.New()()
	m.Write(gxi)
	m.Write(gxr)
	return m.Sum(nil)[:bs]
}

// phase2IV is the first IV of a Quick Mode or informational exchange:
// hash(last phase 1 CBC block | M-ID) truncated (RFC 2409 Appendix B).
func phase2IV(h HashAlg, last []byte, mid uint32) []byte {
	m := h.New()()
	m.Write(last)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], mid)
	m.Write(b[:])
	return m.Sum(nil)[:len(last)]
}

// encrypt pads plain with zeros to the block size and CBC-encrypts it
// with iv. It returns the ciphertext; its last block is the next IV.
func encrypt(blk cipher.Block, iv, plain []byte) []byte {
	bs := blk.BlockSize()
	n := len(plain)
	if r := n % bs; r != 0 {
		n += bs - r
	}
	out := make([]byte, n)
	copy(out, plain)
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(out, out)
	return out
}

// decrypt CBC-decrypts ct with iv into a new buffer.
func decrypt(blk cipher.Block, iv, ct []byte) ([]byte, error) {
	bs := blk.BlockSize()
	if len(ct) == 0 || len(ct)%bs != 0 {
		return nil, perr(HeaderLen, "encrypted body", ErrBadPadding)
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(out, ct)
	return out, nil
}

// lastBlock returns a copy of the last block of ct.
func lastBlock(ct []byte, bs int) []byte {
	return append([]byte{}, ct[len(ct)-bs:]...)
}

// natdHash is HASH(CKY-I | CKY-R | IP | Port) (RFC 3947 §3.2).
func natdHash(h HashAlg, ci, cr []byte, ip []byte, port uint16) []byte {
	m := h.New()()
	m.Write(ci)
	m.Write(cr)
	m.Write(ip)
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], port)
	m.Write(p[:])
	return m.Sum(nil)
}
