package ipstack_test

import (
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/ipstack"
)

// Malformed IPv6 to the routed prefix is dropped and counted, never
// handed to the demultiplexer; IPv6 to an address outside every routed
// prefix is dropped as not routed.
func TestPrefix6MalformedCounted(t *testing.T) {
	st, err := ipstack.New(ipstack.Config{Output: func([]byte) error { return nil }, Routed: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.AddPrefix(netip.MustParsePrefix("2001:db8:8::/64")); err != nil {
		t.Fatal(err)
	}
	called := 0
	st.HandleUDP(5683, func(src, dst netip.AddrPort, payload []byte) bool { called++; return true })
	good := ipstack.AppendUDP6ForTest(netip.MustParseAddrPort("[2001:db8:200::10]:4000"), netip.MustParseAddrPort("[2001:db8:8::17]:5683"), []byte("x"))
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 0xff
	zeroSum := append([]byte(nil), good...)
	zeroSum[46], zeroSum[47] = 0, 0
	frag := append([]byte(nil), good[:40]...)
	frag[6] = 44
	frag = append(frag, 17, 0, 0, 1, 0, 0, 0, 1)
	frag = append(frag, good[40:]...)
	frag[5] += 8
	badExt := append([]byte(nil), good[:40]...)
	badExt[6] = 60
	badExt = append(badExt, 17, 200, 0, 0, 0, 0, 0, 0)
	badExt = append(badExt, good[40:]...)
	badExt[5] += 8
	short := append([]byte(nil), good...)
	short[5] += 10 // payload length beyond the packet
	if err := st.InjectInbound(good); err != nil || called != 1 {
		t.Fatalf("good datagram: err %v, handler called %d times, want 1", err, called)
	}
	for _, pkt := range [][]byte{badSum, zeroSum, badExt} {
		_ = st.InjectInbound(pkt)
	}
	_ = st.InjectInbound(frag)
	if err := st.InjectInbound(short); err == nil {
		t.Fatal("payload length beyond the packet: got nil error")
	}
	other := ipstack.AppendUDP6ForTest(netip.MustParseAddrPort("[2001:db8:200::10]:4000"), netip.MustParseAddrPort("[2001:db8:9::17]:5683"), []byte("x"))
	_ = st.InjectInbound(other)
	if called != 1 {
		t.Fatalf("handler called %d times, want 1 (only the good datagram)", called)
	}
	r := &st.Stats.Route
	if m, f, n, d := r.Malformed.Load(), r.Fragments.Load(), r.NotRouted.Load(), st.Stats.InboundDropped.Load(); m != 3 || f != 1 || n != 1 || d != 1 {
		t.Fatalf("got Malformed=%d Fragments=%d NotRouted=%d InboundDropped=%d, want 3 1 1 1", m, f, n, d)
	}
}
