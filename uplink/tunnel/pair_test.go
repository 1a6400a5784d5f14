package tunnel_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/link/linktest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
	"github.com/fleetgate/fleetgate/uplink/tunnel/tunneltest"
)

// ipPacket builds a minimal IPv4/UDP packet of size bytes tagged with n.
func ipPacket(src, dst netip.Addr, n uint32, size int) []byte {
	b := make([]byte, size)
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(size))
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint32(b[28:], n)
	return b
}

func tag(p []byte) uint32 { return binary.BigEndian.Uint32(p[28:]) }

// collector gathers packet tags from a handler.
type collector chan uint32

func (c collector) handle(p []byte) {
	if len(p) >= 32 {
		select {
		case c <- tag(p):
		default:
		}
	}
}

// expect reads n tags and checks every one of 0..n-1 arrived.
func (c collector) expect(t *testing.T, what string, n int) {
	t.Helper()
	seen := make(map[uint32]bool, n)
	timeout := time.After(20 * time.Second)
	for len(seen) < n {
		select {
		case v := <-c:
			seen[v] = true
		case <-timeout:
			t.Fatalf("%s: got %d distinct packets, want %d", what, len(seen), n)
		}
	}
}

func exchange(t *testing.T, p *tunneltest.Pair, base uint32, n int) {
	t.Helper()
	cli, srv := make(collector, 4096), make(collector, 4096)
	p.Client.SetPacketHandler(cli.handle)
	p.Session.SetPacketHandler(srv.handle)
	for i := 0; i < n; i++ {
		if err := p.Client.WritePacket(ipPacket(tunneltest.ClientAddr, tunneltest.ServerAddr, base+uint32(i), 1400)); err != nil {
			t.Fatalf("client write %d: %v", i, err)
		}
		if err := p.Session.WritePacket(ipPacket(tunneltest.ServerAddr, tunneltest.ClientAddr, base+uint32(i), 200)); err != nil {
			t.Fatalf("server write %d: %v", i, err)
		}
	}
	srv.expect(t, "server", n)
	cli.expect(t, "client", n)
}

// TestPairUpPacketsTeardown: in memory, the client reaches IPCP, the
// server session reports identity, user, address and suite, IP packets
// pass both ways, and Close tears everything down top to bottom.
func TestPairUpPacketsTeardown(t *testing.T) {
	linktest.CheckGoroutines(t)
	p := tunneltest.NewPair(t, tunneltest.Options{})
	st := p.Client.Status()
	if st.Phase != tunnel.PhaseUp || p.Client.LocalAddr() != tunneltest.ClientAddr || p.Client.DNS()[0] != tunneltest.DNS {
		t.Fatalf("client status %+v", st)
	}
	if st.Suite == "" || st.InSPI == 0 || st.OutSPI == 0 || st.Auth != ppp.AuthMSCHAPv2.String() {
		t.Fatalf("client status lacks IPsec/PPP details: %+v", st)
	}
	ss := p.Session
	if ss.Username() != tunneltest.User || ss.Addr() != tunneltest.ClientAddr || ss.IdentityString() != tunneltest.ClientOuter.String() {
		t.Fatalf("server session: user %q addr %v identity %q", ss.Username(), ss.Addr(), ss.IdentityString())
	}
	if ss.Outer().Addr() != tunneltest.ClientOuter || ss.Suite().String() != st.Suite {
		t.Fatalf("server session outer %v suite %v, client suite %v", ss.Outer(), ss.Suite(), st.Suite)
	}
	exchange(t, p, 0, 200)
	if pin, _, pout, _ := ss.Counters(); pin != 200 || pout != 200 {
		t.Fatalf("server counters in %d out %d, want 200/200", pin, pout)
	}

	tunneltest.CloseDriven(p.Clock, p.Client.Close)
	if err := p.Client.Err(); !errors.Is(err, tunnel.ErrClosed) {
		t.Fatalf("client Err after Close: %v, want ErrClosed", err)
	}
	select {
	case <-ss.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server session did not end after client Close")
	}
	// The client's LCP Terminate-Request is followed at once by its CDN;
	// the server's PPP waits out its restart timer in Stopping, so the
	// CDN usually ends the session first.
	if !errors.Is(ss.Err(), ppp.ErrPeerTerminated) && !errors.Is(ss.Err(), l2tp.ErrPeerCDN) {
		t.Errorf("server session end: %v, want peer terminated or peer CDN", ss.Err())
	}
	if err := p.Client.WritePacket(ipPacket(tunneltest.ClientAddr, tunneltest.ServerAddr, 0, 100)); !errors.Is(err, tunnel.ErrNotUp) {
		t.Errorf("write after close: %v, want ErrNotUp", err)
	}
	tunneltest.Drive(t, p.Clock, 100*time.Millisecond, 10*time.Second, "server forgets the peer", func() bool { return p.Server.PeerCount() == 0 })
}
