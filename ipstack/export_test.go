package ipstack

import "net/netip"

// AppendUDP6ForTest builds an IPv6/UDP packet for the external tests.
func AppendUDP6ForTest(src, dst netip.AddrPort, payload []byte) []byte {
	return appendUDP6(nil, src, dst, payload)
}
