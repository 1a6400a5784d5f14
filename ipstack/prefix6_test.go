package ipstack_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/ipstack"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// routedPair6: A owns the site's IPv6 /64 as a route, B is central
// (2001:db8:200::10).
func routedPair6(t *testing.T) *ipstacktest.Pair {
	t.Helper()
	p := ipstacktest.NewPair(t, 0)
	if err := p.A.AddPrefix(netip.MustParsePrefix("2001:db8:8::/64")); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, p.B, "2001:db8:200::10/128")
	return p
}

// The CoAP demultiplexer serves the IPv6 prefix as it serves the IPv4
// one: central → [endpoint v6]:5683 reaches the handler with the
// destination address, the answer leaves from that address, and a
// datagram for an address nobody serves is counted and answered ICMPv6
// port unreachable.
func TestPrefix6Demultiplexer(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair6(t)
	served := netip.MustParseAddr("2001:db8:8::17")
	p.A.HandleUDP(5683, func(src, dst netip.AddrPort, payload []byte) bool {
		if dst.Addr() != served {
			return false
		}
		_ = p.A.WriteUDP(dst, src, append([]byte("echo:"), payload...))
		return true
	})
	c, err := p.B.DialUDP(netip.MustParseAddrPort("[2001:db8:200::10]:0"), netip.AddrPortFrom(served, 5683))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "echo:hi" {
		t.Fatalf("got %q, %v; want echo:hi", buf[:n], err)
	}
	u, err := p.B.DialUDP(netip.MustParseAddrPort("[2001:db8:200::10]:0"), netip.MustParseAddrPort("[2001:db8:8::50]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, _ = u.Write([]byte("anyone?"))
	// The ICMPv6 error's bytes are checked by FuzzParseUDP6; here wait
	// for it to be sent.
	for deadline := time.Now().Add(10 * time.Second); p.A.Stats.Route.Unreachables.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := p.A.Stats.Route.NoEndpoint.Load(); got != 1 {
		t.Fatalf("got NoEndpoint=%d, want 1", got)
	}
	if got := p.A.Stats.Route.Unreachables.Load(); got != 1 {
		t.Fatalf("got Unreachables=%d, want 1", got)
	}
	if got := p.A.Stats.Route.UDPIn.Load(); got != 1 {
		t.Fatalf("got UDPIn=%d, want 1", got)
	}
}

// A UDP conn dialled from a routed IPv6 address is virtual; answers come
// back to it.
func TestPrefix6VirtualUDPConn(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair6(t)
	srv, err := p.B.ListenUDP(netip.MustParseAddrPort("[2001:db8:200::10]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ep := netip.MustParseAddr("2001:db8:8::17")
	c, err := p.A.DialUDP(netip.AddrPortFrom(ep, 0), netip.MustParseAddrPort("[2001:db8:200::10]:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := p.A.RoutedConns(); got != 1 {
		t.Fatalf("got %d routed conns, want 1 (a virtual conn, no gVisor socket)", got)
	}
	if _, err := c.Write([]byte("up")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "up" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if got := from.(*net.UDPAddr).AddrPort(); got.Addr() != ep {
		t.Fatalf("got source %s, want %s", got, ep)
	}
	if _, err := srv.WriteTo([]byte("down"), from); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "down" {
		t.Fatalf("got %q, %v; want down", buf[:n], err)
	}
}

// TCP dialled from a routed (never added) IPv6 address carries data both
// ways and the peer sees that address (the MQTT relay's connection of an
// endpoint when central is reached over IPv6).
func TestPrefix6TCPDial(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair6(t)
	l, err := p.B.ListenTCP(netip.MustParseAddrPort("[2001:db8:200::10]:1883"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			acc <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ep := netip.MustParseAddr("2001:db8:8::42")
	c, err := p.A.DialTCP(ctx, ep, netip.MustParseAddrPort("[2001:db8:200::10]:1883"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sc net.Conn
	select {
	case sc = <-acc:
	case <-ctx.Done():
		t.Fatal("no accept")
	}
	defer sc.Close()
	if got := sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != ep {
		t.Fatalf("got peer %s, want %s", got, ep)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
}

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
