package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func listenUDP(t *testing.T, h *Host, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendRecv sends one datagram from src to dst and returns the source
// address dst saw.
func sendRecv(t *testing.T, src, dst *net.UDPConn, to netip.AddrPort) netip.AddrPort {
	t.Helper()
	if _, err := src.WriteToUDPAddrPort([]byte("fleetgate"), to); err != nil {
		t.Fatal(err)
	}
	if err := dst.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, from, err := dst.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no datagram arrived: %v", err)
	}
	if got := string(buf[:n]); got != "fleetgate" {
		t.Fatalf("got %q, want %q", got, "fleetgate")
	}
	return from
}

func ping(h *Host, dst netip.Addr) error {
	if !h.Reach(dst) {
		return fmt.Errorf("%s: no echo reply from %v", h.Name, dst)
	}
	return nil
}

// blocked reports whether an echo to dst goes unanswered for half a second
// (for checks that expect no path; "network unreachable" counts).
func blocked(h *Host, dst netip.Addr) bool {
	n, _ := h.Ping(dst, 1, 500*time.Millisecond)
	return n == 0
}

func TestTopologyNAT(t *testing.T) {
	topo := New(t, Options{NAT: true, SecondSite: true})
	for _, from := range []string{"sensors", "sensors2", "edge", "edge2"} {
		if err := ping(topo.Host(from), topo.Host("gw").Addr); err != nil {
			t.Errorf("%s cannot reach gw: %v", from, err)
		}
	}
	if err := ping(topo.Host("gw"), topo.Host("central").Addr); err != nil {
		t.Errorf("gw cannot reach central: %v", err)
	}
	// central is reachable only through the gateway (the VPN), not from
	// the internet.
	if !blocked(topo.Host("edge"), topo.Host("central").Addr) {
		t.Errorf("edge reached central %v without the VPN", topo.Host("central").Addr)
	}
	// wan has no route to the private site networks.
	if !blocked(topo.Host("wan"), topo.Host("edge").Addr) {
		t.Errorf("wan reached edge's private address %v, want no route", topo.Host("edge").Addr)
	}

	gw := listenUDP(t, topo.Host("gw"), "0.0.0.0:4500")
	edge := listenUDP(t, topo.Host("edge"), "0.0.0.0:4500")
	edge2 := listenUDP(t, topo.Host("edge2"), "0.0.0.0:4500")
	to := netip.AddrPortFrom(topo.Host("gw").Addr, 4500)
	lo, hi := topo.NATPorts()
	nat := topo.Host("nat").Addr
	from1 := sendRecv(t, edge, gw, to)
	from2 := sendRecv(t, edge2, gw, to)
	for _, f := range []netip.AddrPort{from1, from2} {
		if f.Addr() != nat || f.Port() < lo || f.Port() > hi {
			t.Errorf("gw saw source %v, want %v with a port in %d-%d", f, nat, lo, hi)
		}
	}
	if from1 == from2 {
		t.Errorf("both sites mapped to %v, want distinct mappings", from1)
	}
	// The gateway answers the mapping and the packet reaches edge.
	if got := sendRecv(t, gw, edge, from1); got != to {
		t.Errorf("edge saw reply from %v, want %v", got, to)
	}

	topo.RebindNAT(t)
	nlo, nhi := topo.NATPorts()
	if nlo == lo {
		t.Fatalf("NATPorts unchanged after RebindNAT: %d", nlo)
	}
	after := sendRecv(t, edge, gw, to)
	if after.Addr() != nat || after.Port() < nlo || after.Port() > nhi {
		t.Errorf("after rebinding gw saw %v, want %v with a port in %d-%d (before: %v)", after, nat, nlo, nhi, from1)
	}
}

func TestLossAndCut(t *testing.T) {
	topo := New(t, Options{})
	gwAddr := topo.Host("gw").Addr
	edge := topo.Host("edge")
	if err := ping(edge, gwAddr); err != nil {
		t.Fatalf("edge cannot reach gw: %v", err)
	}
	topo.CutWAN(t)
	if !blocked(edge, gwAddr) {
		t.Error("edge reached gw during CutWAN")
	}
	topo.RestoreWAN(t)
	if err := ping(edge, gwAddr); err != nil {
		t.Errorf("edge cannot reach gw after RestoreWAN: %v", err)
	}

	topo.Loss(t, "wan", "gw", 100)
	if !blocked(edge, gwAddr) {
		t.Error("ping crossed a link with 100% loss")
	}
	// 50% each way: of 40 pings about a quarter come back; accept a wide
	// band that still proves both "some" and "not all".
	topo.Loss(t, "wan", "gw", 50)
	got, err := edge.Ping(gwAddr, 40, time.Second)
	if err != nil || got < 2 || got > 25 {
		t.Errorf("50%% loss each way: %d of 40 echoes answered (err %v), want 2-25", got, err)
	}
	topo.Loss(t, "wan", "gw", 0)
	if err := ping(edge, gwAddr); err != nil {
		t.Errorf("ping fails after loss removed: %v", err)
	}
}

func TestPairCleanup(t *testing.T) {
	testenv.RequireRoot(t)
	var names []string
	var pid int
	t.Run("inner", func(t *testing.T) {
		p := Pair(t)
		a, b := p.Host("a"), p.Host("b")
		names = []string{a.NS, b.NS}
		ca := listenUDP(t, a, "192.0.2.1:1701")
		cb := listenUDP(t, b, "192.0.2.2:1701")
		if got := sendRecv(t, ca, cb, netip.MustParseAddrPort("192.0.2.2:1701")); got.String() != "192.0.2.1:1701" {
			t.Errorf("b saw %v, want 192.0.2.1:1701", got)
		}
		proc := b.Start(t, "sleep", "600")
		pid = proc.PID
		out, err := a.Run(t.Context(), "ip", "-br", "addr", "show", "dev", "b")
		if err != nil || !strings.Contains(out, "192.0.2.1/24") {
			t.Errorf("a's interface b: %q, %v; want 192.0.2.1/24", out, err)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
	if err := unix.Kill(pid, 0); err == nil {
		t.Errorf("process %d still alive after cleanup", pid)
	}
}

func TestDoNilHost(t *testing.T) {
	var h *Host
	ran := false
	if err := h.Do(func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("nil host Do: ran=%v err=%v", ran, err)
	}
}

// TestSocketHelpers: a TCP listener in gw, a dial from edge through the
// NAT; the accepted connection shows the NAT's public address.
func TestSocketHelpers(t *testing.T) {
	topo := New(t, Options{NAT: true})
	l, err := topo.Host("gw").Listen("tcp4", "0.0.0.0:8443")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := topo.Host("edge").DialContext(t.Context(), "tcp4", netip.AddrPortFrom(topo.Host("gw").Addr, 8443).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if want := topo.Host("nat").Addr; got != want {
		t.Errorf("gw sees %v, want the NAT's %v", got, want)
	}
	pc, err := topo.Host("central").ListenPacket("udp4", "10.200.0.2:5683")
	if err != nil {
		t.Fatalf("ListenPacket on central's address: %v", err)
	}
	pc.Close()
	// The same address does not exist in the root namespace.
	if pc, err := (*Host)(nil).ListenPacket("udp4", "10.200.0.2:5683"); err == nil {
		pc.Close()
		t.Error("bound central's address in the root namespace, want an error")
	}
}

// TestOne: a single host has loopback up, its namespace exists, and an
// address added on its lo answers pings from inside.
func TestOne(t *testing.T) {
	h := One(t)
	if h.Name != "a" || h.Addr != netip.MustParseAddr("127.0.0.1") || len(h.Ifaces) != 0 {
		t.Fatalf("One: %+v, want host a on loopback only", h)
	}
	if out, err := h.Run(context.Background(), "ip", "addr", "add", "10.20.0.10/32", "dev", "lo"); err != nil {
		t.Fatal(err, out)
	}
	if n, err := h.Ping(netip.MustParseAddr("10.20.0.10"), 1, 3*time.Second); err != nil || n != 1 {
		t.Fatalf("ping 10.20.0.10 inside: %d replies, %v; want 1", n, err)
	}
	if _, err := os.Stat("/run/netns/" + h.NS); err != nil {
		t.Fatalf("namespace %s: %v", h.NS, err)
	}
}
