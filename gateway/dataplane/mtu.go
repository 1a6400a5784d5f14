package dataplane

import (
	"net/netip"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

// Encapsulation overheads of an L2TP/IPsec packet with NAT-T in ESP
// transport mode (RFC 3948 §2.1, RFC 4303 §2, RFC 2661 §3.1, RFC 1662 §3):
//
// (over IPv6 the outer header is 40 bytes instead of 20, RFC 8200 §3):
//
//	[IPv4 20][UDP 8 (4500)][ESP SPI+Seq 8][IV][UDP 8 (1701)][L2TP][PPP][IP packet][pad][padlen 1][next 1][ICV]
const (
	outerIPv4    = 20
	outerIPv6    = 40 // fixed header; we send no extension headers
	nattUDP      = 8
	espHeader    = 8
	espTrailer   = 2 // pad length + next header
	l2tpUDP      = 8
	l2tpDataMax  = 12 // flags/ver, length, tunnel, session, Ns, Nr (worst case a peer sends)
	pppHeaderMax = 4  // address/control (no ACFC) + protocol (no PFC)
	// DefaultPathMTU is the outer path MTU assumed when none is known.
	DefaultPathMTU = 1500
	// MinMTU is the smallest MTU EffectiveMTU returns (RFC 791 §3.2: every
	// host must accept 576-byte datagrams).
	MinMTU = 576
)

func ivAndBlock(s esp.Suite) (iv, block int) {
	switch s.Cipher {
	case esp.CipherAESGCM16:
		return 8, 4 // RFC 4106 §3: 8-byte IV, 4-byte alignment
	case esp.CipherAESCBC:
		return 16, 16 // RFC 3602 §2
	case esp.Cipher3DES:
		return 8, 8 // RFC 2451
	}
	return 16, 16
}

// EffectiveMTU is the largest inner IPv4 packet a session with this ESP
// suite can carry in one outer packet of pathMTU bytes (0 = 1500), capped
// at maxMTU when maxMTU > 0. Examples at 1500: aes128gcm16 1414,
// aes128-sha1 and aes256-sha256 1398.
func EffectiveMTU(s esp.Suite, pathMTU, maxMTU int) int {
	return effectiveMTU(s, outerIPv4, pathMTU, maxMTU)
}

// EffectiveMTUOver is EffectiveMTU for a session whose outer (ESP-in-UDP)
// packets go to outer: 20 bytes less over IPv6 (a v4-mapped address is
// IPv4). Examples at 1500 over IPv6: aes128gcm16 1394, aes128-sha1 1382.
func EffectiveMTUOver(s esp.Suite, outer netip.Addr, pathMTU, maxMTU int) int {
	if outer.Unmap().Is6() {
		return effectiveMTU(s, outerIPv6, pathMTU, maxMTU)
	}
	return effectiveMTU(s, outerIPv4, pathMTU, maxMTU)
}

func effectiveMTU(s esp.Suite, outerIP, pathMTU, maxMTU int) int {
	if pathMTU <= 0 {
		pathMTU = DefaultPathMTU
	}
	iv, block := ivAndBlock(s)
	room := pathMTU - outerIP - nattUDP - espHeader - iv - s.ICVLen()
	payload := room/block*block - espTrailer
	mtu := payload - l2tpUDP - l2tpDataMax - pppHeaderMax
	if maxMTU > 0 && mtu > maxMTU {
		mtu = maxMTU
	}
	if mtu < MinMTU {
		mtu = MinMTU
	}
	return mtu
}
