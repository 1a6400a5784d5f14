package l2tp_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
)

// TestInteropXL2TPDLACToOurLNS: xl2tpd 1.3 as LAC (host b of a
// namespace pair) dials our LNS (host a). Tunnel and session must reach
// established on both sides (our state and xl2tpd's log agree on the IDs);
// pppd cannot run on this kernel, so xl2tpd gives up at the PPP stage.
// tshark must find no malformed packet.
func TestInteropXL2TPDLACToOurLNS(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "xl2tpd")
	testenv.RequireBinary(t, "tshark")
	topo := netns.Pair(t)
	a, b := topo.Host("a"), topo.Host("b")
	capture := realpeer.StartCapture(t, a, "b", "udp")
	conn, err := a.ListenPacket("udp4", a.Addr.String()+":1701")
	if err != nil {
		t.Fatal(err)
	}
	var st l2tp.Stats
	lns, err := l2tp.Listen(conn, l2tp.Config{Stats: &st, HostName: "fleetgate-lns"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lns.Close() })

	x := realpeer.StartXL2TPD(t, b, realpeer.XL2TPDConfig{
		Listen: netip.AddrPortFrom(b.Addr, 1702),
		LNS:    netip.AddrPortFrom(a.Addr, 1701),
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := lns.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v\nxl2tpd:\n%s", err, x.Proc.Output())
	}
	tun := s.Tunnel()
	log := x.WaitOutput(t, 5*time.Second, "Call established")
	// xl2tpd names our IDs as "Remote".
	ours := regexp.QuoteMeta(a.Addr.String())
	m := regexp.MustCompile(`Connection established to ` + ours + `, 1701\.\s+Local: (\d+), Remote: (\d+)`).FindStringSubmatch(log)
	if m == nil || m[2] != strconv.Itoa(int(tun.LocalID())) {
		t.Fatalf("xl2tpd tunnel line %q, want Remote: %d\n%s", m, tun.LocalID(), log)
	}
	c := regexp.MustCompile(`Call established with ` + ours + `, Local: (\d+), Remote: (\d+)`).FindStringSubmatch(log)
	if c == nil || c[2] != strconv.Itoa(int(s.LocalID())) || c[1] != strconv.Itoa(int(s.PeerID())) {
		t.Fatalf("xl2tpd call line %q, want Local %d Remote %d\n%s", c, s.PeerID(), s.LocalID(), log)
	}
	if st.TunnelsEstablished.Load() != 1 || st.SessionsEstablished.Load() != 1 {
		t.Fatalf("our counters: tunnels %d sessions %d", st.TunnelsEstablished.Load(), st.SessionsEstablished.Load())
	}
	// pppd cannot start here: xl2tpd tears the call down; we see why.
	select {
	case <-s.Done():
		t.Logf("session closed by xl2tpd: %v", s.Err())
		if !errors.Is(s.Err(), l2tp.ErrPeerCDN) {
			t.Errorf("session close reason: %v, want a CDN from the peer", s.Err())
		}
	case <-time.After(10 * time.Second):
		t.Log("xl2tpd kept the call open; closing it ourselves")
		s.Close()
	}
	// Clean teardown from our side: StopCCN, acknowledged by xl2tpd.
	t0 := time.Now()
	tun.Close()
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("StopCCN took %v to be acknowledged", d)
	}
	if !errors.Is(tun.Err(), l2tp.ErrClosed) {
		t.Errorf("tunnel close reason: %v", tun.Err())
	}
	x.WaitOutput(t, 5*time.Second, "Connection closed to "+a.Addr.String()+", port 1701")
	x.Proc.Stop()
	pcap := capture.Stop()
	if bad := realpeer.Malformed(t, pcap); len(bad) > 0 {
		t.Errorf("tshark flags %d packet(s) as malformed or erroneous:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	l2 := realpeer.Lines(t, pcap, "l2tp")
	if len(l2) < 6 {
		t.Errorf("capture holds %d L2TP packets, want at least SCCRQ..ICCN", len(l2))
	}
	t.Logf("tshark: %d L2TP packets, none malformed; first ones:\n%s", len(l2), strings.Join(l2[:min(len(l2), 8)], "\n"))
}

// TestInteropOurLACToXL2TPDLNS (bonus): our LAC (host a) dials xl2tpd as
// LNS (host b); the tunnel and the session reach established, then xl2tpd
// drops the call because pppd cannot run here.
func TestInteropOurLACToXL2TPDLNS(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "xl2tpd")
	topo := netns.Pair(t)
	a, b := topo.Host("a"), topo.Host("b")
	x := realpeer.StartXL2TPD(t, b, realpeer.XL2TPDConfig{
		Listen:  netip.AddrPortFrom(b.Addr, 1701),
		IPRange: "10.99.0.10-10.99.0.20",
		LocalIP: "10.99.0.1",
	})
	x.WaitOutput(t, 10*time.Second, "Listening on IP address")
	conn, err := a.ListenPacket("udp4", a.Addr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	var st l2tp.Stats
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tun, err := l2tp.Dial(ctx, conn, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.Addr, 1701)), l2tp.Config{Stats: &st, HostName: "fleetgate-lac"})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, x.Proc.Output())
	}
	s, err := tun.OpenSession(ctx)
	if err != nil {
		t.Fatalf("session: %v\n%s", err, x.Proc.Output())
	}
	if st.TunnelsEstablished.Load() != 1 || st.SessionsEstablished.Load() != 1 {
		t.Fatalf("counters: tunnels %d sessions %d", st.TunnelsEstablished.Load(), st.SessionsEstablished.Load())
	}
	x.WaitOutput(t, 5*time.Second, "Call established with "+a.Addr.String())
	select {
	case <-s.Done():
		t.Logf("session closed by xl2tpd: %v", s.Err())
	case <-time.After(5 * time.Second):
		s.Close()
	}
	tun.Close()
	if !errors.Is(tun.Err(), l2tp.ErrClosed) {
		t.Errorf("tunnel close reason: %v", tun.Err())
	}
}
