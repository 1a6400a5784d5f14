package ipstack

import (
	"net/netip"
	"testing"
)

func udp4Seeds() [][]byte {
	src := netip.MustParseAddrPort("10.20.0.1:40000")
	dst := netip.MustParseAddrPort("10.10.8.17:5683")
	ok := appendUDP4(nil, src, dst, 1, []byte{0x40, 0x01, 0x12, 0x34, 0xb4, 't', 'e', 's', 't'})
	frag := append([]byte(nil), ok...)
	frag[6] = 0x20 // MF
	badSum := append([]byte(nil), ok...)
	badSum[len(badSum)-1] ^= 0xff
	noSum := append([]byte(nil), ok...)
	noSum[26], noSum[27] = 0, 0
	short := ok[:24]
	return [][]byte{ok, frag, badSum, noSum, short, appendPortUnreachable(nil, ok, 2)}
}

// FuzzParseUDP4 feeds arbitrary packets to the routed-prefix codec: no
// panic; what parses re-encodes to the same datagram, and the port
// unreachable built for it is a valid IPv4 packet.
func FuzzParseUDP4(f *testing.F) {
	for _, s := range udp4Seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d, err := parseUDP4(pkt)
		if err != nil {
			return
		}
		b := appendUDP4(nil, d.src, d.dst, 9, d.payload)
		d2, err := parseUDP4(b)
		if err != nil || d2.src != d.src || d2.dst != d.dst || string(d2.payload) != string(d.payload) {
			t.Fatalf("re-encode: %v %+v != %+v", err, d2, d)
		}
		u := appendPortUnreachable(nil, pkt, 3)
		if _, err := parseUDP4(u); err != errNotUDP {
			t.Fatalf("port unreachable does not parse as a valid non-UDP IPv4 packet: %v", err)
		}
	})
}

// FuzzRoutedInbound feeds arbitrary packets to a routed stack's inbound
// path with a demultiplexer registered: no panic, every packet either
// consumed and counted or handed to gVisor.
func FuzzRoutedInbound(f *testing.F) {
	for _, s := range udp4Seeds() {
		f.Add(s)
	}
	st, err := New(Config{Output: func([]byte) error { return nil }, Routed: true})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	if err := st.AddPrefix(netip.MustParsePrefix("10.10.8.0/24")); err != nil {
		f.Fatal(err)
	}
	st.HandleUDP(5683, func(src, dst netip.AddrPort, payload []byte) bool { return dst.Addr().As4()[3]%2 == 1 })
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_ = st.InjectInbound(pkt)
	})
}

func udp6Seeds() [][]byte {
	src := netip.MustParseAddrPort("[2001:db8:200::10]:40000")
	dst := netip.MustParseAddrPort("[2001:db8:8::17]:5683")
	ok := appendUDP6(nil, src, dst, []byte{0x40, 0x01, 0x12, 0x34, 0xb4, 't', 'e', 's', 't'})
	frag := append(append(append([]byte(nil), ok[:40]...), 17, 0, 0, 1, 0, 0, 0, 1), ok[40:]...)
	frag[6], frag[5] = 44, frag[5]+8
	dstOpts := append(append(append([]byte(nil), ok[:40]...), 17, 0, 1, 4, 0, 0, 0, 0), ok[40:]...)
	dstOpts[6], dstOpts[5] = 60, dstOpts[5]+8
	badSum := append([]byte(nil), ok...)
	badSum[len(badSum)-1] ^= 0xff
	return [][]byte{ok, frag, dstOpts, badSum, ok[:44], appendPortUnreachable6(nil, ok)}
}

// FuzzParseUDP6 feeds arbitrary packets to the IPv6 codec: no panic; what
// parses re-encodes to the same datagram, and the ICMPv6 port unreachable
// built for it is a valid IPv6 packet with a correct ICMPv6 checksum that
// fits the IPv6 minimum MTU.
func FuzzParseUDP6(f *testing.F) {
	for _, s := range udp6Seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d, err := parseUDP6(pkt)
		if err != nil {
			return
		}
		b := appendUDP6(nil, d.src, d.dst, d.payload)
		d2, err := parseUDP6(b)
		if err != nil || d2.src != d.src || d2.dst != d.dst || string(d2.payload) != string(d.payload) {
			t.Fatalf("re-encode: %v %+v != %+v", err, d2, d)
		}
		u := appendPortUnreachable6(nil, pkt)
		if len(u) > minIPv6MTU {
			t.Fatalf("ICMPv6 error of %d bytes, over %d", len(u), minIPv6MTU)
		}
		if _, err := parseUDP6(u); err != errNotUDP {
			t.Fatalf("port unreachable does not parse as a valid non-UDP IPv6 packet: %v", err)
		}
		if pseudo6Checksum(d.dst.Addr(), d.src.Addr(), protoICMPv6, u[ipv6HeaderLen:]) != 0xffff {
			t.Fatal("ICMPv6 checksum does not verify")
		}
	})
}

// FuzzRoutedInbound6 is FuzzRoutedInbound for the IPv6 prefix.
func FuzzRoutedInbound6(f *testing.F) {
	for _, s := range udp6Seeds() {
		f.Add(s)
	}
	st, err := New(Config{Output: func([]byte) error { return nil }, Routed: true})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	if err := st.AddPrefix(netip.MustParsePrefix("2001:db8:8::/64")); err != nil {
		f.Fatal(err)
	}
	st.HandleUDP(5683, func(src, dst netip.AddrPort, payload []byte) bool { return dst.Addr().As16()[15]%2 == 1 })
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_ = st.InjectInbound(pkt)
	})
}
