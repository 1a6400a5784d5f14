package ike

import (
	"crypto/ecdh"
	"fmt"
	"io"
	"math/big"
)

// Group is a Diffie-Hellman group by its IANA number (RFC 2409 §6, RFC
// 3526, RFC 5903).
type Group uint16

// Groups implemented.
const (
	GroupNone     Group = 0
	GroupMODP1024 Group = 2  // RFC 2409 §6.2; legacy, off by default
	GroupMODP2048 Group = 14 // RFC 3526 §3
	GroupMODP3072 Group = 15 // RFC 3526 §4
	GroupMODP4096 Group = 16 // RFC 3526 §5
	GroupECP256   Group = 19 // RFC 5903 §3.1
	GroupECP384   Group = 20 // RFC 5903 §3.2
	// GroupCurve25519 is X25519 (RFC 8031; IANA number 31, which strongSwan
	// also uses in IKEv1 and proposes first by default).
	GroupCurve25519 Group = 31
)

// The MODP primes (generator 2) from RFC 2409 §6.2 and RFC 3526 §3-5.
const (
	modp1024Hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF"
	modp3072Hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
	modp4096Hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA993B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF"
	modp2048Hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF"
)

var modpPrimes = map[Group]*big.Int{}

func init() {
	for g, h := range map[Group]string{GroupMODP1024: modp1024Hex, GroupMODP2048: modp2048Hex, GroupMODP3072: modp3072Hex, GroupMODP4096: modp4096Hex} {
		p, ok := new(big.Int).SetString(h, 16)
		if !ok {
			panic("ike: bad MODP prime constant")
		}
		modpPrimes[g] = p
	}
}

// String names the group as strongSwan does.
func (g Group) String() string {
	switch g {
	case GroupNone:
		return "none"
	case GroupMODP1024:
		return "modp1024"
	case GroupMODP2048:
		return "modp2048"
	case GroupMODP3072:
		return "modp3072"
	case GroupMODP4096:
		return "modp4096"
	case GroupECP256:
		return "ecp256"
	case GroupECP384:
		return "ecp384"
	case GroupCurve25519:
		return "curve25519"
	}
	return fmt.Sprintf("group%d", uint16(g))
}

// Supported reports whether the group is implemented.
func (g Group) Supported() bool {
	switch g {
	case GroupMODP1024, GroupMODP2048, GroupMODP3072, GroupMODP4096, GroupECP256, GroupECP384, GroupCurve25519:
		return true
	}
	return false
}

// KELen is the length of the KE payload data for the group.
func (g Group) KELen() int {
	switch g {
	case GroupECP256:
		return 64
	case GroupECP384:
		return 96
	case GroupCurve25519:
		return 32
	}
	if p, ok := modpPrimes[g]; ok {
		return (p.BitLen() + 7) / 8
	}
	return 0
}

func (g Group) curve() ecdh.Curve {
	switch g {
	case GroupECP256:
		return ecdh.P256()
	case GroupECP384:
		return ecdh.P384()
	case GroupCurve25519:
		return ecdh.X25519()
	}
	return nil
}

// dhKey is one side's ephemeral Diffie-Hellman key.
type dhKey struct {
	group Group
	pub   []byte // KE payload data
	x     *big.Int
	ec    *ecdh.PrivateKey
}

// newDH makes an ephemeral key for g.
func newDH(g Group, rand io.Reader) (*dhKey, error) {
	if c := g.curve(); c != nil {
		k, err := c.GenerateKey(rand)
		if err != nil {
			return nil, err
		}
		pub := k.PublicKey().Bytes()
		if g != GroupCurve25519 {
			// crypto/ecdh encodes 0x04||x||y; IKE carries x||y (RFC 5903
			// §7). X25519 keys are carried as they are (RFC 8031 §3.1).
			pub = pub[1:]
		}
		return &dhKey{group: g, ec: k, pub: pub}, nil
	}
	p, ok := modpPrimes[g]
	if !ok {
		return nil, fmt.Errorf("ike: unsupported DH group %d", g)
	}
	// A private exponent of twice the group's strength is plenty (RFC 3526
	// §8); 512 bits covers every group here.
	buf := make([]byte, 64)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, err
	}
	x := new(big.Int).SetBytes(buf)
	x.SetBit(x, 511, 1)
	y := new(big.Int).Exp(big.NewInt(2), x, p)
	return &dhKey{group: g, x: x, pub: y.FillBytes(make([]byte, g.KELen()))}, nil
}

// keLenOK reports whether n bytes of KE data fit group g: exactly the
// group's length for ECP; for MODP at most that length and at least half
// of it. RFC 2409 §5 has a MODP value zero-padded to the prime's length,
// but SoftEther sends it without its leading zero bytes (1 handshake in
// 256 has a 255-byte MODP-2048 value); the number is the same, so it is
// taken as is (the bytes received are what HASH_I/HASH_R cover) and only
// a value far too short to be a real public value is refused.
func keLenOK(g Group, n int) bool {
	if _, modp := modpPrimes[g]; modp {
		return n <= g.KELen() && n >= g.KELen()/2
	}
	return n == g.KELen()
}

// shared computes g^xy from the peer's KE data, rejecting degenerate
// values (RFC 2409 §5 leaves that to us; RFC 6989 §2.1 for MODP).
func (k *dhKey) shared(peer []byte) ([]byte, error) {
	if !keLenOK(k.group, len(peer)) {
		return nil, fmt.Errorf("%w: %d bytes of KE data for %v", ErrBadKE, len(peer), k.group)
	}
	if k.ec != nil {
		enc := append([]byte{4}, peer...)
		if k.group == GroupCurve25519 {
			enc = peer
		}
		// X25519: crypto/ecdh refuses a low-order point (all-zero
		// result), the check RFC 8031 §2.3 asks for.
		pk, err := k.ec.Curve().NewPublicKey(enc)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKE, err)
		}
		s, err := k.ec.ECDH(pk)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKE, err)
		}
		return s, nil
	}
	p := modpPrimes[k.group]
	y := new(big.Int).SetBytes(peer)
	pm1 := new(big.Int).Sub(p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return nil, fmt.Errorf("%w: degenerate MODP value", ErrBadKE)
	}
	s := new(big.Int).Exp(y, k.x, p)
	return s.FillBytes(make([]byte, k.group.KELen())), nil
}
