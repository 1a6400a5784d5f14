package uplink

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

func startServer(t *testing.T, addr netip.Addr, sessions chan *l2tpipsec.ServerSession) *l2tpipsec.Server {
	t.Helper()
	srv, err := l2tpipsec.NewServer(l2tpipsec.ServerConfig{
		IKEAddr: "127.0.0.1:0", NATTAddr: "127.0.0.1:0",
		PSK:           func(netip.Addr) ([]byte, bool) { return []byte("uplink-psk"), true },
		Authenticator: ppp.LocalUsers{"site1": "pw1"},
		AddressFunc: func(context.Context, string) (ppp.Assignment, error) {
			return ppp.Assignment{Addr: addr}, nil
		},
		LocalAddr: netip.MustParseAddr("10.10.0.1"),
		OnSession: func(s *l2tpipsec.ServerSession) { sessions <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestLoopbackFailoverBetweenGateways: real sockets, real tunnels. The
// client comes up on gateway A; A shuts down (StopCCN + Delete); the client
// fails over to gateway B by itself and the same packet handler receives
// B's packets.
func TestLoopbackFailoverBetweenGateways(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sa, sb := make(chan *l2tpipsec.ServerSession, 2), make(chan *l2tpipsec.ServerSession, 2)
	a := startServer(t, netip.MustParseAddr("10.10.8.1"), sa)
	b := startServer(t, netip.MustParseAddr("10.10.9.1"), sb)
	c, err := New(Config{
		Gateways: []Gateway{
			{Addr: a.IKEAddr().String(), NATTPort: a.NATTAddr().Port()},
			{Addr: b.IKEAddr().String(), NATTPort: b.NATTAddr().Port()},
		},
		Tunnel: l2tpipsec.ClientConfig{
			LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0",
			PSK: []byte("uplink-psk"), Username: "site1", Password: "pw1",
			IKEOptions: l2tpipsec.IKEOptions{Retransmit: 200 * time.Millisecond, Retries: 2},
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan netip.Addr, 8)
	c.SetPacketHandler(func(p []byte) { got <- netip.AddrFrom4([4]byte(p[12:16])) })
	c.Start()
	t.Cleanup(func() { c.Close() })

	send := func(ss *l2tpipsec.ServerSession, src netip.Addr) {
		t.Helper()
		pkt := make([]byte, 40)
		pkt[0], pkt[9] = 0x45, 17
		binary.BigEndian.PutUint16(pkt[2:], 40)
		s, d := src.As4(), ss.Addr().As4()
		copy(pkt[12:], s[:])
		copy(pkt[16:], d[:])
		if err := ss.WritePacket(pkt); err != nil {
			t.Fatal(err)
		}
		select {
		case from := <-got:
			if from != src {
				t.Fatalf("packet from %v, want %v", from, src)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("packet from %v lost", src)
		}
	}
	var ssA *l2tpipsec.ServerSession
	select {
	case ssA = <-sa:
	case <-time.After(30 * time.Second):
		t.Fatalf("never up on A: %+v", c.Status())
	}
	waitUp := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.Status().State != StateUp {
			if time.Now().After(deadline) {
				t.Fatalf("not up: %+v", c.Status())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitUp()
	send(ssA, netip.MustParseAddr("10.10.0.1"))
	if st := c.Status(); st.State != StateUp || st.Addr != netip.MustParseAddr("10.10.8.1") {
		t.Fatalf("on A: %+v", st)
	}
	a.Close()
	var ssB *l2tpipsec.ServerSession
	select {
	case ssB = <-sb:
	case <-time.After(30 * time.Second):
		t.Fatalf("never failed over to B: %+v", c.Status())
	}
	waitUp()
	st := c.Status()
	if st.Gateway != b.IKEAddr().String() || st.Addr != netip.MustParseAddr("10.10.9.1") || st.LastErr == nil {
		t.Fatalf("on B: %+v", st)
	}
	t.Logf("failed over after %v", st.LastErr)
	send(ssB, netip.MustParseAddr("10.10.0.1"))
}
