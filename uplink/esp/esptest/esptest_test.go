package esptest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

func TestWrap(t *testing.T) {
	p := stacktest.NewPipe(stacktest.PipeConfig{})
	a := Wrap(p.A, netip.MustParseAddrPort("192.0.2.1:4500"), netip.MustParseAddrPort("203.0.113.1:4500"))
	b := Wrap(p.B, netip.MustParseAddrPort("203.0.113.1:4500"), netip.MustParseAddrPort("192.0.2.1:4500"))
	t.Cleanup(func() { a.Close(); b.Close() })
	if _, err := a.WriteTo([]byte("hi"), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	n, from, err := b.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hi" || from.(*net.UDPAddr).AddrPort() != netip.MustParseAddrPort("192.0.2.1:4500") {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	if got := a.LocalAddr().String(); got != "192.0.2.1:4500" {
		t.Fatalf("LocalAddr = %s", got)
	}
	a.Close()
	if _, _, err := a.ReadFrom(buf); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
