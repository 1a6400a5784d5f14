// Package esp implements IPsec ESP (RFC 4303) in transport mode, carried in
// UDP (RFC 3948), in userspace.
//
// Three layers:
//
//   - Suite names a negotiated transform (IKEv1 DOI numbers) and the KEYMAT
//     layout.
//   - SA is one direction of an IPsec SA: Seal appends an ESP packet to a
//     caller buffer, Open verifies and decrypts in place (anti-replay window
//     from package replay, padding and Next Header checks, soft and hard
//     lifetimes, sequence-number exhaustion). Keys never change after
//     NewSA, so the data path takes no control-plane lock; zero allocations
//     per packet.
//   - Transport owns the IKE (500) and NAT-T (4500) sockets, classifies
//     NAT-T datagrams (non-ESP marker → IKE, 0xFF → keepalive, else ESP by
//     SPI from an atomically published table), sends keepalives, follows
//     NAT rebinding, and hands L2TP a net.PacketConn (L2TP) whose addresses
//     (*Addr) name the IPsec peer, stable across rekeys. On Linux the NAT-T
//     socket is read with recvmmsg (up to 32 datagrams per call) and ESP
//     written back to back is queued for one sender goroutine that writes
//     it with sendmmsg, runs of equal-size datagrams to one peer as a single
//     UDP GSO message; a lone datagram is written by its caller at once.
//     TransportConfig.SingleIO turns batching off.
//
// A composer turns each Quick Mode result into NewSA(Inbound) +
// NewSA(Outbound) and Transport.AddSA (first pair) or Transport.Rekey
// (make-before-break), and calls RemoveSA on the peer's Delete.
//
// ESP is always UDP-encapsulated, even without NAT: raw IP protocol 50 needs
// a raw socket (root) and this kernel has no ESP; stock clients accept it
// and SoftEther forces it. Sent inner UDP headers carry checksum 0 (RFC 768
// allows it for IPv4; RFC 3948 §3.1.2); received inner checksums are not
// checked because NAT changed the addresses they cover and the ESP ICV
// already protects the bytes.
package esp

import (
	"fmt"
	"strings"
)

// Cipher is an ESP encryption transform, numbered as the IKEv1 IPsec DOI
// numbers it (RFC 2407 §4.4.4, IANA "IPsec ESP Transform Identifiers").
type Cipher uint8

const (
	// Cipher3DES is ESP_3DES (RFC 2451), for legacy peers only.
	Cipher3DES Cipher = 3
	// CipherAESCBC is ESP_AES-CBC (RFC 3602), 128 or 256-bit keys.
	CipherAESCBC Cipher = 12
	// CipherAESGCM16 is ESP_AES-GCM with a 16-octet ICV (RFC 4106).
	CipherAESGCM16 Cipher = 20
)

// Integ is an ESP integrity transform, numbered as the IKEv1 IPsec DOI
// Authentication Algorithm attribute (RFC 2407 §4.5, RFC 4868 §2.4).
type Integ uint16

const (
	// IntegNone means no separate integrity transform (combined-mode AEAD).
	IntegNone Integ = 0
	// IntegHMACMD5_96 is HMAC-MD5-96 (RFC 2403), for legacy peers only.
	IntegHMACMD5_96 Integ = 1
	// IntegHMACSHA1_96 is HMAC-SHA1-96 (RFC 2404).
	IntegHMACSHA1_96 Integ = 2
	// IntegHMACSHA256_128 is HMAC-SHA-256-128 (RFC 4868).
	IntegHMACSHA256_128 Integ = 5
	// IntegHMACSHA384_192 is HMAC-SHA-384-192 (RFC 4868).
	IntegHMACSHA384_192 Integ = 6
	// IntegHMACSHA512_256 is HMAC-SHA-512-256 (RFC 4868).
	IntegHMACSHA512_256 Integ = 7
)

// Suite is a negotiated ESP transform: cipher, key size and integrity.
type Suite struct {
	Cipher  Cipher
	KeyBits int // 128 or 256 for AES, 192 for 3DES
	Integ   Integ
}

// Legacy reports whether the suite uses a transform that is off by default
// (3DES, HMAC-MD5).
func (s Suite) Legacy() bool { return s.Cipher == Cipher3DES || s.Integ == IntegHMACMD5_96 }

// Validate reports whether the combination is one this package implements.
func (s Suite) Validate() error {
	switch s.Cipher {
	case CipherAESGCM16:
		if s.Integ != IntegNone {
			return fmt.Errorf("esp: AES-GCM takes no integrity transform, got %d", s.Integ)
		}
		if s.KeyBits != 128 && s.KeyBits != 256 {
			return fmt.Errorf("esp: AES-GCM key of %d bits", s.KeyBits)
		}
		return nil
	case CipherAESCBC:
		if s.KeyBits != 128 && s.KeyBits != 256 {
			return fmt.Errorf("esp: AES-CBC key of %d bits", s.KeyBits)
		}
	case Cipher3DES:
		if s.KeyBits != 192 {
			return fmt.Errorf("esp: 3DES key of %d bits", s.KeyBits)
		}
	default:
		return fmt.Errorf("esp: unsupported cipher %d", s.Cipher)
	}
	if s.AuthKeyLen() == 0 {
		return fmt.Errorf("esp: unsupported integrity %d", s.Integ)
	}
	return nil
}

// EncKeyLen is the number of KEYMAT bytes the cipher takes: the key, plus
// the 4-byte salt for AES-GCM (RFC 4106 §8.1).
func (s Suite) EncKeyLen() int {
	if s.Cipher == CipherAESGCM16 {
		return s.KeyBits/8 + 4
	}
	return s.KeyBits / 8
}

// AuthKeyLen is the number of KEYMAT bytes the integrity transform takes.
func (s Suite) AuthKeyLen() int {
	switch s.Integ {
	case IntegHMACMD5_96:
		return 16
	case IntegHMACSHA1_96:
		return 20
	case IntegHMACSHA256_128:
		return 32
	case IntegHMACSHA384_192:
		return 48
	case IntegHMACSHA512_256:
		return 64
	}
	return 0
}

// ICVLen is the length of the integrity check value on the wire.
func (s Suite) ICVLen() int {
	switch s.Integ {
	case IntegNone:
		if s.Cipher == CipherAESGCM16 {
			return 16
		}
	case IntegHMACMD5_96, IntegHMACSHA1_96:
		return 12
	case IntegHMACSHA256_128:
		return 16
	case IntegHMACSHA384_192:
		return 24
	case IntegHMACSHA512_256:
		return 32
	}
	return 0
}

// KeymatLen is the length of KEYMAT (RFC 2409 §5.5) one direction of an SA
// with this suite needs. KEYMAT is split encryption key first (with the GCM
// salt at its end), then integrity key, as strongSwan and Windows do.
func (s Suite) KeymatLen() int { return s.EncKeyLen() + s.AuthKeyLen() }

// String names the suite the way strongSwan proposal strings do, e.g.
// "aes128gcm16", "aes256-sha256", "3des-sha1".
func (s Suite) String() string {
	var b strings.Builder
	switch s.Cipher {
	case CipherAESGCM16:
		fmt.Fprintf(&b, "aes%dgcm16", s.KeyBits)
		return b.String()
	case CipherAESCBC:
		fmt.Fprintf(&b, "aes%d", s.KeyBits)
	case Cipher3DES:
		b.WriteString("3des")
	default:
		fmt.Fprintf(&b, "cipher%d", s.Cipher)
	}
	switch s.Integ {
	case IntegHMACMD5_96:
		b.WriteString("-md5")
	case IntegHMACSHA1_96:
		b.WriteString("-sha1")
	case IntegHMACSHA256_128:
		b.WriteString("-sha256")
	case IntegHMACSHA384_192:
		b.WriteString("-sha384")
	case IntegHMACSHA512_256:
		b.WriteString("-sha512")
	case IntegNone:
	default:
		fmt.Fprintf(&b, "-integ%d", s.Integ)
	}
	return b.String()
}
