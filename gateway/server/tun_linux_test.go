package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/ipv4"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// echoSession answers ICMP echo requests like a site would: the reply goes
// back through the router as if it came out of the tunnel.
type echoSession struct {
	*testSession
	env *Env
}

func (e *echoSession) WritePacket(p []byte) error {
	h := ipv4.Header(p)
	if h.Validate() != nil || h.Protocol() != ipv4.ProtoICMP || len(h.Payload()) < 8 || h.Payload()[0] != 8 {
		return e.testSession.WritePacket(p)
	}
	r := append([]byte(nil), p[:h.TotalLen()]...)
	rh := ipv4.Header(r)
	src, dst := h.Src().As4(), h.Dst().As4()
	copy(r[12:16], dst[:])
	copy(r[16:20], src[:])
	r[8] = 64
	rh.SetChecksum()
	icmp := rh.Payload()
	icmp[0] = 0
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:], ipv4.Checksum(icmp, 0))
	go func() { _ = e.env.Router.FromSession(e, r) }() // not re-entrant on the host reader
	return nil
}

func netnsDo(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(err)
		}
	}()
	fn()
}

// TestTUNPingAndDynamicRoutes runs the server on a TUN in a fresh
// namespace ("central"): the kernel there pings a site's VPN address and an
// endpoint inside its framed route (answered by the fake site), and a
// RADIUS-style framed route not in the configuration is installed on
// Register and removed on Unregister.
func TestTUNPingAndDynamicRoutes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	ns := fmt.Sprintf("fgsv%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	_ = exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	cfg, err := config.Parse("gw.yaml", []byte("psk: {shared: x}\nmetrics: {listen: \"off\"}\npolicy: {default: deny}\n"+
		"identities:\n  - {name: hall7, ppp: {password: p}, address: 10.10.0.7, routes: [10.10.8.0/24]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var tun *dataplane.TUN
	netnsDo(t, ns, func() {
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: ns,
			Routes: []netip.Prefix{cfg.Pool.PrefixP, netip.MustParsePrefix("10.10.8.0/24")}})
	})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *Env, 1)
	srv, err := New(cfg, Options{Host: tun, Engine: EngineFunc(func(ctx context.Context, env *Env) error {
		ready <- env
		<-ctx.Done()
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	env := <-ready
	sess := &echoSession{testSession: newTestSession("hall7", "10.10.0.7", "10.10.8.0/24", "10.77.0.0/24"), env: env}
	if err := env.Register(sess); err != nil {
		t.Fatal(err)
	}
	routes, _ := exec.Command("ip", "-n", ns, "route", "show", "dev", "fg0").CombinedOutput()
	if !strings.Contains(string(routes), "10.77.0.0/24") {
		t.Errorf("dynamic framed route not installed:\n%s", routes)
	}
	var icmpConn net.PacketConn
	netnsDo(t, ns, func() {
		icmpConn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { icmpConn.Close() })
	for i, dst := range []string{"10.10.0.7", "10.10.8.17", "10.77.0.5"} {
		if err := pingOnce(icmpConn, netip.MustParseAddr(dst), uint16(0x4600+i)); err != nil {
			t.Errorf("ping %s from the central namespace: %v", dst, err)
		}
	}
	// Default-deny policy: the site itself may not open anything, yet the
	// echo replies passed as replies to central's requests.
	if got := env.Router.Stats.Drops(dataplane.ReasonPolicy); got != 0 {
		t.Errorf("policy drops: got %d, want 0", got)
	}
	env.Unregister(sess, 0)
	routes, _ = exec.Command("ip", "-n", ns, "route", "show", "dev", "fg0").CombinedOutput()
	if strings.Contains(string(routes), "10.77.0.0/24") || !strings.Contains(string(routes), "10.10.8.0/24") {
		t.Errorf("after Unregister: want 10.77.0.0/24 gone and configured 10.10.8.0/24 kept:\n%s", routes)
	}
}

// pingOnce sends one ICMP echo request (RFC 792) on a raw socket and waits
// for the matching reply.
func pingOnce(c net.PacketConn, dst netip.Addr, id uint16) error {
	msg := make([]byte, 16)
	msg[0] = 8
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], 1)
	copy(msg[8:], "fleetgat")
	binary.BigEndian.PutUint16(msg[2:], ipv4.Checksum(msg, 0))
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.(*net.IPAddr).IP.Equal(dst.AsSlice()) {
			return nil
		}
	}
}
