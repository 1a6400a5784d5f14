package ipstack_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/ipstack"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

func mustAdd(t *testing.T, s *ipstack.Stack, p string) {
	t.Helper()
	if err := s.AddAddress(netip.MustParsePrefix(p)); err != nil {
		t.Fatal(err)
	}
}

func TestUDPSourcedFromEndpointAddress(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := ipstacktest.NewPair(t, 0)
	mustAdd(t, p.A, "10.10.8.1/24")
	mustAdd(t, p.A, "10.10.8.17/32")
	mustAdd(t, p.B, "10.20.0.1/32")

	srv, err := p.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := p.A.DialUDP(netip.MustParseAddrPort("10.10.8.17:0"), netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(buf[:n]), "hello"; got != want {
		t.Fatalf("got payload %q, want %q", got, want)
	}
	src := from.(*net.UDPAddr).AddrPort().Addr()
	if want := netip.MustParseAddr("10.10.8.17"); src != want {
		t.Fatalf("got source %s, want %s", src, want)
	}
	if _, err := srv.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "back" {
		t.Fatalf("got reply %q, want %q", got, "back")
	}
	if p.A.Stats.PacketsOut.Load() == 0 || p.A.Stats.PacketsIn.Load() == 0 {
		t.Fatalf("got PacketsOut=%d PacketsIn=%d, want both > 0", p.A.Stats.PacketsOut.Load(), p.A.Stats.PacketsIn.Load())
	}
}

func TestTCPSourcedAndLargeTransfer(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := ipstacktest.NewPair(t, 1280)
	mustAdd(t, p.A, "10.10.8.42/32")
	mustAdd(t, p.B, "10.20.0.1/32")
	l, err := p.B.ListenTCP(netip.MustParseAddrPort("10.20.0.1:1883"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type res struct {
		src  netip.Addr
		data []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		ch <- res{src: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), data: b, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.A.DialTCP(ctx, netip.MustParseAddr("10.10.8.42"), netip.MustParseAddrPort("10.20.0.1:1883"))
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 200_000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if want := netip.MustParseAddr("10.10.8.42"); r.src != want {
			t.Fatalf("got source %s, want %s", r.src, want)
		}
		if len(r.data) != len(payload) || string(r.data) != string(payload) {
			t.Fatalf("got %d bytes (equal=%v), want %d identical bytes", len(r.data), string(r.data) == string(payload), len(payload))
		}
	case <-ctx.Done():
		t.Fatal("timeout waiting for TCP transfer")
	}
}

func TestInjectInboundRejectsGarbage(t *testing.T) {
	s, err := ipstack.New(ipstack.Config{Output: func([]byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, pkt := range [][]byte{nil, {0x45}, make([]byte, 40), append([]byte{0x60, 0, 0, 0, 0, 1}, make([]byte, 34)...)} {
		if err := s.InjectInbound(pkt); err == nil {
			t.Fatalf("InjectInbound(%x): got nil error, want ErrNotIPv4", pkt)
		}
	}
	if got, want := s.Stats.InboundDropped.Load(), uint64(4); got != want {
		t.Fatalf("got InboundDropped=%d, want %d", got, want)
	}
}

func TestRemoveAddressStopsDelivery(t *testing.T) {
	p := ipstacktest.NewPair(t, 0)
	mustAdd(t, p.A, "10.10.8.5/32")
	mustAdd(t, p.B, "10.20.0.1/32")
	if err := p.A.RemoveAddress(netip.MustParseAddr("10.10.8.5")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.A.DialUDP(netip.MustParseAddrPort("10.10.8.5:0"), netip.MustParseAddrPort("10.20.0.1:9")); err == nil {
		t.Fatal("DialUDP from a removed address: got nil error, want error")
	}
	if got := len(p.A.Addresses()); got != 0 {
		t.Fatalf("got %d addresses, want 0", got)
	}
}

func TestNewRequiresOutput(t *testing.T) {
	if _, err := ipstack.New(ipstack.Config{}); err != ipstack.ErrNoOutput {
		t.Fatalf("got %v, want ErrNoOutput", err)
	}
}
