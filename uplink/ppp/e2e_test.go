package ppp_test

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

func drive(t testing.TB, clk *stacktest.Clock, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		clk.Advance(50 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
}

func closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// TestLACAndPPPClientAgainstLNSAndPPPServer runs the whole inner uplink
// over a pipe losing, duplicating and reordering 5% of datagrams each way,
// on a fake clock: tunnel, session, LCP, MS-CHAPv2, IPCP, IP both ways,
// clean teardown, no goroutine left.
func TestLACAndPPPClientAgainstLNSAndPPPServer(t *testing.T) {
	stacktest.CheckGoroutines(t)
	imp := stacktest.Impairment{LossPercent: 5, DupPercent: 5, ReorderPercent: 5}
	pipe := stacktest.NewPipe(stacktest.PipeConfig{AtoB: imp, BtoA: imp, Seed: 42})
	clk := stacktest.NewClock()
	var lacStats, lnsStats l2tp.Stats
	var cliStats, srvStats ppp.Stats

	lns, _ := l2tp.Listen(pipe.B, l2tp.Config{Clock: clk, Stats: &lnsStats, HostName: "gw"})
	t.Cleanup(func() { lns.Close() })
	var server atomic.Pointer[ppp.Conn]
	serverGot := make(chan []byte, 256)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		s, err := lns.Accept(context.Background())
		if err != nil {
			return
		}
		c := ppp.Attach(s, ppp.Config{
			Role: ppp.Server, Clock: clk, Stats: &srvStats,
			Authenticator: ppp.LocalUsers{"site1": "pw1"},
			AssignAddress: func(context.Context, string) (ppp.Assignment, error) {
				return ppp.Assignment{Addr: netip.MustParseAddr("10.10.8.17"), DNS: [2]netip.Addr{netip.MustParseAddr("10.0.0.53")}}, nil
			},
			LocalAddr: netip.MustParseAddr("10.10.0.1"),
		})
		c.SetPacketHandler(func(p []byte) { serverGot <- append([]byte(nil), p...) })
		server.Store(c)
	}()

	var tun atomic.Pointer[l2tp.Tunnel]
	go func() {
		tt, err := l2tp.Dial(context.Background(), pipe.A, stacktest.Addr("b"), l2tp.Config{Clock: clk, Stats: &lacStats, HostName: "site1"})
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		tun.Store(tt)
	}()
	drive(t, clk, "tunnel", func() bool { return tun.Load() != nil })
	tt := tun.Load()
	var sess atomic.Pointer[l2tp.Session]
	go func() {
		s, err := tt.OpenSession(context.Background())
		if err != nil {
			t.Errorf("session: %v", err)
			return
		}
		sess.Store(s)
	}()
	drive(t, clk, "session", func() bool { return sess.Load() != nil })
	s := sess.Load()
	client := ppp.New(s, ppp.Config{Role: ppp.Client, Clock: clk, Stats: &cliStats, Username: "site1", Password: "pw1"})
	clientGot := make(chan []byte, 256)
	client.SetPacketHandler(func(p []byte) { clientGot <- append([]byte(nil), p...) })
	s.SetFrameHandler(client.Input)

	drive(t, clk, "client IPCP opened", closed(client.Up()))
	drive(t, clk, "server IPCP opened", func() bool { c := server.Load(); return c != nil && closed(c.Up())() })
	srv := server.Load()
	ci, si := client.Info(), srv.Info()
	if ci.Local != netip.MustParseAddr("10.10.8.17") || ci.DNS[0] != netip.MustParseAddr("10.0.0.53") || ci.Method != ppp.AuthMSCHAPv2 {
		t.Fatalf("client info %+v", ci)
	}
	if si.Peer != ci.Local || si.Username != "site1" || ci.PeerMRU != ppp.DefaultMRU {
		t.Fatalf("server info %+v", si)
	}

	const n = 100
	for i := 0; i < n; i++ {
		if err := client.WritePacket(pkttest.Tagged(ci.Local, ci.Peer, uint32(i), 1400)); err != nil {
			t.Fatal(err)
		}
		if err := srv.WritePacket(pkttest.Tagged(ci.Peer, ci.Local, uint32(i), 200)); err != nil {
			t.Fatal(err)
		}
	}
	countAtLeast := func(ch chan []byte, want, size int) int {
		got := 0
		timeout := time.After(5 * time.Second)
		for got < want {
			select {
			case p := <-ch:
				if len(p) != size {
					t.Fatalf("packet of %d bytes, want %d", len(p), size)
				}
				got++
			case <-timeout:
				return got
			}
		}
		return got
	}
	if got := countAtLeast(serverGot, 80, 1400); got < 80 {
		t.Fatalf("server received %d of %d packets over 5%% loss", got, n)
	}
	if got := countAtLeast(clientGot, 80, 200); got < 80 {
		t.Fatalf("client received %d of %d packets over 5%% loss", got, n)
	}
	if err := client.WritePacket(make([]byte, ppp.DefaultMRU+1)); !errors.Is(err, ppp.ErrTooBig) {
		t.Fatalf("oversize packet: got %v, want ErrTooBig", err)
	}

	// Teardown, top down: LCP Terminate, CDN, StopCCN.
	cdone := make(chan struct{})
	go func() { client.Close(); close(cdone) }()
	drive(t, clk, "PPP terminate", closed(cdone))
	if !errors.Is(client.Err(), ppp.ErrClosed) {
		t.Fatalf("client reason: %v", client.Err())
	}
	drive(t, clk, "server PPP down", closed(srv.Done()))
	s.Close()
	drive(t, clk, "LNS session down", func() bool { return lnsStats.SessionsClosed.Load() == 1 })
	tdone := make(chan struct{})
	go func() { tt.Close(); close(tdone) }()
	drive(t, clk, "tunnel close", closed(tdone))
	drive(t, clk, "LNS tunnel gone", func() bool { return lnsStats.TunnelsClosed.Load() == 1 })
	<-acceptDone
	t.Logf("pipe sent %d dropped %d dup %d reordered %d; L2TP retransmits %d/%d; PPP packets in %d/%d",
		pipe.Stats.Sent.Load(), pipe.Stats.Dropped.Load(), pipe.Stats.Duplicated.Load(), pipe.Stats.Reordered.Load(),
		lacStats.ControlRetransmits.Load(), lnsStats.ControlRetransmits.Load(), cliStats.PacketsIn.Load(), srvStats.PacketsIn.Load())
}
