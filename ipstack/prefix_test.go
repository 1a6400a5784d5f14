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

func routedPair(t *testing.T) *ipstacktest.Pair {
	t.Helper()
	p := ipstacktest.NewPair(t, 0)
	if err := p.A.AddPrefix(netip.MustParsePrefix("10.10.8.0/24")); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, p.B, "10.20.0.1/32")
	return p
}

// One handler serves the CoAP port of every routed address: it sees the
// destination address, answers from it, and a datagram for an address it
// does not serve is counted and answered ICMP port unreachable.
func TestPrefixDemultiplexer(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair(t)
	served := netip.MustParseAddr("10.10.8.17")
	p.A.HandleUDP(5683, func(src, dst netip.AddrPort, payload []byte) bool {
		if dst.Addr() != served {
			return false
		}
		_ = p.A.WriteUDP(dst, src, append([]byte("echo:"), payload...))
		return true
	})
	if got := len(p.A.Addresses()); got != 0 {
		t.Fatalf("got %d stack addresses, want 0 (the prefix is a route)", got)
	}
	c, err := p.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.AddrPortFrom(served, 5683))
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

	// Nobody at 10.10.8.50: dropped, counted, port unreachable (the
	// connected gVisor socket on B reports it as a refused read).
	u, err := p.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.10.8.50:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, _ = u.Write([]byte("anyone?"))
	_ = u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Read(buf); err == nil {
		t.Fatal("read from an address with no endpoint: got a datagram, want an error")
	}
	if got := p.A.Stats.Route.NoEndpoint.Load(); got != 1 {
		t.Fatalf("got NoEndpoint=%d, want 1", got)
	}
	if got := p.A.Stats.Route.Unreachables.Load(); got != 1 {
		t.Fatalf("got Unreachables=%d, want 1", got)
	}
}

// A conn dialled from a routed address is a map entry: answers come back
// to it, and RemoveAddress closes it.
func TestPrefixVirtualUDPConn(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair(t)
	srv, err := p.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ep := netip.MustParseAddr("10.10.8.17")
	c, err := p.A.DialUDP(netip.AddrPortFrom(ep, 0), netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
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
	if got := from.(*net.UDPAddr).AddrPort(); got != c.LocalAddr().(*net.UDPAddr).AddrPort() || got.Addr() != ep {
		t.Fatalf("got source %s, want %s from %s", got, c.LocalAddr(), ep)
	}
	if _, err := srv.WriteTo([]byte("down"), from); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "down" {
		t.Fatalf("got %q, %v; want down", buf[:n], err)
	}
	if got := p.A.RoutedConns(); got != 1 {
		t.Fatalf("got %d routed conns, want 1", got)
	}
	if err := p.A.RemoveAddress(ep); err != nil {
		t.Fatal(err)
	}
	if got := p.A.RoutedConns(); got != 0 {
		t.Fatalf("after RemoveAddress: got %d routed conns, want 0", got)
	}
	if _, err := c.Read(buf); err == nil {
		t.Fatal("read after RemoveAddress: got nil error")
	}
}

// TCP dialled from a routed (never added) address carries data, and
// RemoveAddress of that address aborts it (revocation).
func TestPrefixTCPDialAndAbort(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := routedPair(t)
	l, err := p.B.ListenTCP(netip.MustParseAddrPort("10.20.0.1:1883"))
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
	ep := netip.MustParseAddr("10.10.8.42")
	c, err := p.A.DialTCP(ctx, ep, netip.MustParseAddrPort("10.20.0.1:1883"))
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
	if err := p.A.RemoveAddress(ep); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("local read after RemoveAddress: got nil error")
	}
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("peer read after RemoveAddress: got %v, want a reset", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Unicast to an address neither assigned nor routed is dropped (promiscuous
// mode is on) and counted.
func TestPrefixNotRoutedDropped(t *testing.T) {
	p := routedPair(t)
	before := p.A.Stats.Route.NotRouted.Load()
	c, err := p.B.DialUDP(netip.MustParseAddrPort("10.20.0.1:0"), netip.MustParseAddrPort("10.99.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("x"))
	deadline := time.Now().Add(5 * time.Second)
	for p.A.Stats.Route.NotRouted.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("NotRouted not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.A.WriteUDP(netip.MustParseAddrPort("10.99.0.1:5683"), netip.MustParseAddrPort("10.20.0.1:9"), []byte("x")); err != ipstack.ErrNotRouted {
		t.Fatalf("WriteUDP from an unrouted address: got %v, want ErrNotRouted", err)
	}
	if err := p.B.AddPrefix(netip.MustParsePrefix("10.30.0.0/24")); err != ipstack.ErrNotRoutable {
		t.Fatalf("AddPrefix without Config.Routed: got %v, want ErrNotRoutable", err)
	}
}

// A virtual conn holds at most ConnQueueLen unread datagrams (the rest are
// dropped and counted) and honours read deadlines.
func TestPrefixVirtualConnBounds(t *testing.T) {
	p := routedPair(t)
	srv, err := p.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := p.A.DialUDP(netip.MustParseAddrPort("10.10.8.17:0"), netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(make([]byte, 10)); !isTimeout(err) {
		t.Fatalf("read past the deadline: got %v, want a timeout", err)
	}
	const sent = ipstack.ConnQueueLen + 36
	to := c.LocalAddr()
	for i := 0; i < sent; i++ {
		if _, err := srv.WriteTo([]byte{byte(i)}, to); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.A.Stats.Route.ConnQueueFull.Load()+p.A.Stats.Route.UDPIn.Load() < sent {
		if time.Now().After(deadline) {
			t.Fatalf("in %d + dropped %d, want %d", p.A.Stats.Route.UDPIn.Load(), p.A.Stats.Route.ConnQueueFull.Load(), sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := p.A.Stats.Route.ConnQueueFull.Load(), uint64(sent-ipstack.ConnQueueLen); got != want {
		t.Fatalf("got ConnQueueFull=%d, want %d", got, want)
	}
	buf := make([]byte, 10)
	for i := 0; i < ipstack.ConnQueueLen; i++ {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("datagram %d: got %v %x, want %02x in order", i, err, buf[:n], i)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read of an empty queue: got %v, want a timeout", err)
	}
}
