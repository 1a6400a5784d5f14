package engine_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/ipstack"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// streamBytes is the size of each TCP stream of TestNetnsTCPStreamGSO.
const streamBytes = 100 << 20

// pattern is a deterministic byte stream of n bytes (seeded), read in
// chunks, so both ends can hash it without holding 100 MB.
func pattern(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)
}

func hashOf(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// TestNetnsTCPStreamGSO: a site (our tunnel client with a userspace TCP
// stack whose NIC MTU is 1500, bigger than the session's) and "central"
// (the kernel, GSO/TSO on its veth) exchange one 100 MB TCP stream each
// way through L2TP/IPsec and the gateway's vnet TUN (TSO super-packets
// split on read, writes coalesced). Both streams arrive intact (SHA-256
// of what was sent and received); the SYNs were clamped to the session
// MTU (central's socket reports the clamped MSS); a DF packet too big for
// the session gets an ICMP frag-needed that the kernel accepts, both in
// central and on the gateway host itself (ip route get shows the learnt
// path MTU).
func TestNetnsTCPStreamGSO(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	topo := netns.New(t, netns.Options{})
	gw, central, edge := topo.Host("gw"), topo.Host("central"), topo.Host("edge")
	cfg := parseConfigPool(t, "10.10.0.0/24", "  - {name: site2, ppp: {password: pw2}, routes: [10.10.9.0/24]}\npolicy: {default: allow}\n")
	var tun *dataplane.TUN
	if err := gw.Do(func() error {
		var err error
		tun, err = dataplane.OpenTUN(dataplane.TUNConfig{Name: "fg0", LocalAddr: cfg.Pool.GatewayAddr, NetNS: gw.NS,
			Routes: []netip.Prefix{cfg.Pool.PrefixP, netip.MustParsePrefix("10.10.9.0/24")}})
		return err
	}); err != nil {
		t.Fatalf("open TUN in gw: %v", err)
	}
	if tun.Driver() != dataplane.TUNDriverVnet {
		t.Fatalf("TUN driver %q, want vnet (GSO/GRO)", tun.Driver())
	}
	eng := engine.New(engine.Config{
		IKEConn:  listenIn(t, gw, gw.Addr.String()+":500"),
		NATTConn: listenIn(t, gw, gw.Addr.String()+":4500"),
	})
	srv, err := server.New(cfg, server.Options{Engine: eng, Host: tun})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-eng.Ready()

	tn, _ := dial(t, l2tpipsec.ClientConfig{
		Gateway: netip.AddrPortFrom(gw.Addr, 500).String(), NATTPort: 4500,
		IKEConn: listenIn(t, edge, "0.0.0.0:500"), NATTConn: listenIn(t, edge, "0.0.0.0:4500"),
		PSK:      []byte(testPSK),
		LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte("site2.sites.example")},
		Username: "site2", Password: "pw2",
	})
	site := netip.MustParseAddr("10.10.9.17")
	// The site's stack believes its link carries 1500 bytes: only the
	// gateway's MSS clamping keeps its segments within the session MTU.
	st, err := ipstack.New(ipstack.Config{MTU: 1500, Output: tn.WritePacket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.AddAddress(netip.PrefixFrom(site, 32)); err != nil {
		t.Fatal(err)
	}
	tn.SetPacketHandler(func(p []byte) { _ = st.InjectInbound(p) })
	waitFor(t, "session registered", func() bool { return srv.Env().Sessions.Len() == 1 })
	sessMTU := srv.Env().Sessions.Lookup(tn.LocalAddr()).MTU()

	var ln net.Listener
	if err := central.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", central.Addr.String()+":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	// Site -> central: the site dials, sends streamBytes; central hashes.
	// Central -> site: central answers on the same connection with
	// streamBytes of its own, through the TUN's TSO path.
	var upSum, downSum [32]byte
	var upN, downN int64
	var centralMSS int
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { centralMSS, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
		}
		wdone := make(chan error, 1)
		go func() {
			_, err := io.Copy(c, pattern(2, streamBytes))
			_ = c.(*net.TCPConn).CloseWrite()
			wdone <- err
		}()
		upSum, upN, err = hashOf(c)
		if err != nil {
			errs <- fmt.Errorf("central read: %w", err)
		}
		if err := <-wdone; err != nil {
			errs <- fmt.Errorf("central write: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer dcancel()
		c, err := st.DialTCP(dctx, site, netip.AddrPortFrom(central.Addr, 7000))
		if err != nil {
			errs <- fmt.Errorf("site dial: %w", err)
			return
		}
		defer c.Close()
		wdone := make(chan error, 1)
		go func() {
			_, err := io.Copy(c, pattern(1, streamBytes))
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			wdone <- err
		}()
		downSum, downN, err = hashOf(c)
		if err != nil {
			errs <- fmt.Errorf("site read: %w", err)
		}
		if err := <-wdone; err != nil {
			errs <- fmt.Errorf("site write: %w", err)
		}
	}()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Minute):
		ln.Close()
		t.Fatalf("streams not done after 5 minutes (router: %d to host, %d to sessions, too big %d)", srv.Env().Router.Stats.ToHostPackets.Load(),
			srv.Env().Router.Stats.ToSessionPackets.Load(), srv.Env().Router.Stats.Drops(dataplane.ReasonTooBig))
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	el := time.Since(t0)
	wantUp, _, _ := hashOf(pattern(1, streamBytes))
	wantDown, _, _ := hashOf(pattern(2, streamBytes))
	if upN != streamBytes || upSum != wantUp {
		t.Errorf("site -> central: %d bytes, hash match %v; want %d bytes, same hash", upN, upSum == wantUp, streamBytes)
	}
	if downN != streamBytes || downSum != wantDown {
		t.Errorf("central -> site: %d bytes, hash match %v; want %d bytes, same hash", downN, downSum == wantDown, streamBytes)
	}
	t.Logf("2 x %d MB in %v (%.0f Mbit/s each way); session MTU %d, central's MSS %d, MSS clamped %d times",
		streamBytes>>20, el.Round(time.Millisecond), float64(streamBytes)*8/el.Seconds()/1e6, sessMTU, centralMSS, srv.Env().Router.Stats.MSSClamped.Load())
	if centralMSS <= 0 || centralMSS > sessMTU-40 {
		t.Errorf("central's MSS %d, want at most session MTU %d - 40 (clamped)", centralMSS, sessMTU)
	}
	// GSO and GRO at work: central's TSO bursts arrive as super-packets
	// (more packets than reads) and the site's stream is written in
	// batches (more packets than writes).
	ts := tun.Stats()
	t.Logf("TUN: %d reads carried %d packets, %d writes carried %d packets, %d write errors",
		ts.Reads.Load(), ts.PacketsRead.Load(), ts.Writes.Load(), ts.PacketsWritten.Load(), ts.WriteErrors.Load())
	if ts.PacketsRead.Load() < 2*ts.Reads.Load() {
		t.Errorf("TUN reads: %d packets in %d reads, want GSO super-packets (at least 2 per read on average)", ts.PacketsRead.Load(), ts.Reads.Load())
	}
	if ts.PacketsWritten.Load() <= ts.Writes.Load() {
		t.Errorf("TUN writes: %d packets in %d writes, want batches", ts.PacketsWritten.Load(), ts.Writes.Load())
	}
	if srv.Env().Router.Stats.MSSClamped.Load() < 2 {
		t.Errorf("MSS clamped %d times, want both SYNs", srv.Env().Router.Stats.MSSClamped.Load())
	}

	// Path-MTU discovery with offloads on: a DF datagram too big for the
	// session, from central and from the gateway host itself, must teach
	// the sender's kernel the session MTU (IP_MTU of the socket).
	for _, h := range []*netns.Host{central, gw} {
		if got := learnPMTU(t, h, netip.AddrPortFrom(site, 9)); got != sessMTU {
			t.Errorf("%s: path MTU to %v after DF datagrams of 1500 bytes: %d, want the session MTU %d (frag-needed not accepted)", h.Name, site, got, sessMTU)
		}
	}
}

// learnPMTU sends 1500-byte DF datagrams from h to dst until the kernel's
// path MTU for the connected socket drops below 1500 (an ICMP
// frag-needed was accepted) or 5 s pass, and returns the path MTU.
func learnPMTU(t *testing.T, h *netns.Host, dst netip.AddrPort) int {
	t.Helper()
	mtu := 0
	err := h.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}); err != nil || serr != nil {
			return fmt.Errorf("IP_MTU_DISCOVER: %v %v", err, serr)
		}
		payload := make([]byte, 1500-28)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			_, _ = c.Write(payload) // EMSGSIZE once the MTU is learnt
			time.Sleep(100 * time.Millisecond)
			_ = rc.Control(func(fd uintptr) { mtu, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU) })
			if mtu > 0 && mtu < 1500 {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return mtu
}
