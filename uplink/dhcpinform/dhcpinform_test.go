package dhcpinform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// windowsInform builds a DHCPINFORM as Windows sends it over PPP: from its
// PPP address to 255.255.255.255:67, ciaddr set, option 55 asking for 121
// and 249 among others.
func windowsInform(t testing.TB, mod func(m []byte) []byte) []byte {
	m := make([]byte, bootpLen+4)
	m[0], m[1], m[2] = opRequest, 1, 6
	binary.BigEndian.PutUint32(m[4:], 0x3903f326)
	copy(m[12:16], []byte{10, 10, 0, 7})
	copy(m[28:34], []byte{0x00, 0x53, 0x45, 0x00, 0x00, 0x07})
	binary.BigEndian.PutUint32(m[bootpLen:], magicCookie)
	m = append(m, optMessageType, 1, msgInform)
	m = append(m, 61, 7, 1, 0x00, 0x53, 0x45, 0x00, 0x00, 0x07)
	m = append(m, 12, 5, 'h', 'a', 'l', 'l', '7')
	m = append(m, optParamRequest, 6, 1, 15, 3, 6, 249, 121)
	m = append(m, optEnd)
	if mod != nil {
		m = mod(m)
	}
	pkt := make([]byte, 20+8+len(m))
	encodeIPv4(pkt, len(pkt), 128, netip.MustParseAddr("10.10.0.7"), netip.MustParseAddr("255.255.255.255"))
	binary.BigEndian.PutUint16(pkt[20:], ClientPort)
	binary.BigEndian.PutUint16(pkt[22:], ServerPort)
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(m)))
	copy(pkt[28:], m)
	return pkt
}

func TestRFC3442Encoding(t *testing.T) {
	// RFC 3442 §3 examples, router 10.10.0.1.
	gw := netip.MustParseAddr("10.10.0.1")
	tests := []struct {
		prefix string
		want   []byte
	}{
		{"0.0.0.0/0", []byte{0}},
		{"10.0.0.0/8", []byte{8, 10}},
		{"10.0.0.0/24", []byte{24, 10, 0, 0}},
		{"10.17.0.0/16", []byte{16, 10, 17}},
		{"10.27.129.0/24", []byte{24, 10, 27, 129}},
		{"10.229.0.128/25", []byte{25, 10, 229, 0, 128}},
		{"10.198.122.47/32", []byte{32, 10, 198, 122, 47}},
	}
	for _, tt := range tests {
		r := Route{Prefix: netip.MustParsePrefix(tt.prefix), Gateway: gw}
		got := AppendClasslessRoutes(nil, []Route{r})
		want := append(append([]byte{}, tt.want...), 10, 10, 0, 1)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got % x, want % x", tt.prefix, got, want)
		}
		back, err := ParseClasslessRoutes(got)
		if err != nil || len(back) != 1 || back[0] != r {
			t.Errorf("%s: round trip got %v, %v", tt.prefix, back, err)
		}
	}
}

func TestRespondWindowsInform(t *testing.T) {
	reply := Reply{
		ServerID: netip.MustParseAddr("10.10.0.1"),
		Routes: []Route{
			{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParseAddr("10.10.0.1")},
			{netip.MustParsePrefix("10.10.0.0/24"), netip.MustParseAddr("10.10.0.1")},
		},
		DNS:    []netip.Addr{netip.MustParseAddr("10.20.0.53")},
		Domain: "corp.example",
	}
	out, ok, err := Respond(windowsInform(t, nil), reply)
	if err != nil || !ok {
		t.Fatalf("Respond: ok %v, err %v", ok, err)
	}
	h := header.IPv4(out)
	if !h.IsValid(len(out)) {
		t.Fatal("reply is not a valid IPv4 packet")
	}
	if h.SourceAddress() != tcpip.AddrFrom4(reply.ServerID.As4()) || h.DestinationAddress() != tcpip.AddrFrom4([4]byte{10, 10, 0, 7}) {
		t.Errorf("IP addresses: got %v -> %v, want 10.10.0.1 -> 10.10.0.7", h.SourceAddress(), h.DestinationAddress())
	}
	if !h.IsChecksumValid() {
		t.Error("bad IP header checksum")
	}
	udp := header.UDP(h.Payload())
	if sp, dp := udp.SourcePort(), udp.DestinationPort(); sp != ServerPort || dp != ClientPort {
		t.Errorf("ports: got %d -> %d, want 67 -> 68", sp, dp)
	}
	if !udp.IsChecksumValid(h.SourceAddress(), h.DestinationAddress(), checksum.Checksum(udp.Payload(), 0)) {
		t.Error("bad UDP checksum")
	}
	m := udp[8:]
	if len(m) < minReplySize {
		t.Errorf("BOOTP reply %d bytes, want >= %d", len(m), minReplySize)
	}
	if m[0] != opReply || binary.BigEndian.Uint32(m[4:]) != 0x3903f326 {
		t.Errorf("op %d xid %#x, want 2 and the request's xid", m[0], binary.BigEndian.Uint32(m[4:]))
	}
	if !bytes.Equal(m[12:16], []byte{10, 10, 0, 7}) || !bytes.Equal(m[16:20], []byte{0, 0, 0, 0}) {
		t.Errorf("ciaddr % x yiaddr % x, want ciaddr echoed and yiaddr 0 (RFC 2131 §4.3.5)", m[12:16], m[16:20])
	}
	opts := map[byte][]byte{}
	if err := walkOptions(m[bootpLen+4:], func(c byte, v []byte) error { opts[c] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(opts[optMessageType], []byte{msgAck}) {
		t.Errorf("message type: got %v, want ACK", opts[optMessageType])
	}
	if _, lease := opts[51]; lease {
		t.Error("DHCPACK to INFORM must not carry a lease time (RFC 2131 §4.3.5)")
	}
	for _, code := range []byte{optClasslessRoutes, optMSClasslessRoute} {
		got, err := ParseClasslessRoutes(opts[code])
		if err != nil || !reflect.DeepEqual(got, reply.Routes) {
			t.Errorf("option %d: got %v, %v; want %v", code, got, err, reply.Routes)
		}
	}
	if !bytes.Equal(opts[optDNS], []byte{10, 20, 0, 53}) || string(opts[optDomainName]) != "corp.example" {
		t.Errorf("dns/domain options: % x %q", opts[optDNS], opts[optDomainName])
	}
}

func TestRespondIgnoresAndRejects(t *testing.T) {
	reply := Reply{ServerID: netip.MustParseAddr("10.10.0.1")}
	// A DNS query is not ours: ok=false, err=nil.
	dns := windowsInform(t, nil)
	binary.BigEndian.PutUint16(dns[22:], 53)
	if _, ok, err := Respond(dns, reply); ok || err != nil {
		t.Errorf("non-DHCP packet: ok %v err %v, want false, nil", ok, err)
	}
	tests := []struct {
		name string
		mod  func(m []byte) []byte
		want error
	}{
		{"discover not inform", func(m []byte) []byte { m[bootpLen+6] = 1; return m }, ErrNotInform},
		{"bad cookie", func(m []byte) []byte { m[bootpLen] = 0; return m }, ErrMagic},
		{"option overrun", func(m []byte) []byte { return append(m[:len(m)-1], 12, 200, 'x') }, ErrOption},
		{"truncated bootp", func(m []byte) []byte { return m[:100] }, ErrShort},
	}
	for _, tt := range tests {
		if _, _, err := Respond(windowsInform(t, tt.mod), reply); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	for _, bad := range [][]byte{{33}, {24, 10, 0}, {8, 10, 1, 2, 3}, {24, 10, 0, 1, 10, 10, 0}, {31, 10, 0, 0, 1, 10, 10, 0, 1}} {
		if _, err := ParseClasslessRoutes(bad); !errors.Is(err, ErrRouteFormat) {
			t.Errorf("ParseClasslessRoutes(% x): got %v, want ErrRouteFormat", bad, err)
		}
	}
}
