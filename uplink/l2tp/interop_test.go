package l2tp_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/l2tp/l2tptest"
)

// TestInteropXL2TPDLACToOurLNS: xl2tpd 1.3 as LAC dials our LNS in a
// private namespace. Tunnel and session must reach established on both
// sides (our state and xl2tpd's log agree on the IDs); pppd cannot run on
// this kernel, so xl2tpd gives up at the PPP stage. tshark must find no
// malformed packet.
func TestInteropXL2TPDLACToOurLNS(t *testing.T) {
	testenv.RequireRoot(t)
	xl2tpd := testenv.RequireBinary(t, "xl2tpd")
	testenv.RequireBinary(t, "tshark")
	dir := t.TempDir()
	ns := l2tptest.Netns(t, "h2x")
	stopCap := l2tptest.Capture(t, ns, "lo", dir, "udp")
	conn := l2tptest.ListenUDP(t, ns, "127.0.0.1:1701")
	var st l2tp.Stats
	lns, _ := l2tp.Listen(conn, l2tp.Config{Stats: &st, HostName: "fleetgate-lns"})
	t.Cleanup(func() { lns.Close() })

	conf := filepath.Join(dir, "xl2tpd.conf")
	os.WriteFile(conf, []byte(`[global]
port = 1702
access control = no
debug tunnel = yes
debug state = yes
[lac fg]
lns = 127.0.0.1
autodial = yes
redial = no
require authentication = no
length bit = yes
`), 0o600)
	x := l2tptest.Start(t, ns, xl2tpd, "-D", "-c", conf, "-p", filepath.Join(dir, "pid"), "-C", filepath.Join(dir, "control"))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := lns.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v\nxl2tpd:\n%s", err, x.Output())
	}
	tun := s.Tunnel()
	if !x.WaitOutput("Call established", 5*time.Second) {
		t.Fatalf("xl2tpd did not log the call:\n%s", x.Output())
	}
	log := x.Output()
	// xl2tpd names our IDs as "Remote".
	m := regexp.MustCompile(`Connection established to 127\.0\.0\.1, 1701\.\s+Local: (\d+), Remote: (\d+)`).FindStringSubmatch(log)
	if m == nil || m[2] != strconv.Itoa(int(tun.LocalID())) {
		t.Fatalf("xl2tpd tunnel line %q, want Remote: %d\n%s", m, tun.LocalID(), log)
	}
	c := regexp.MustCompile(`Call established with 127\.0\.0\.1, Local: (\d+), Remote: (\d+)`).FindStringSubmatch(log)
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
	if !x.WaitOutput("Connection closed to 127.0.0.1, port 1701", 5*time.Second) {
		t.Errorf("xl2tpd did not log our StopCCN:\n%s", x.Output())
	}
	x.Stop(syscall.SIGTERM)
	pcap := stopCap()
	n := l2tptest.NoMalformed(t, pcap, "", "l2tp")
	if n < 6 {
		t.Errorf("capture holds %d L2TP packets, want at least SCCRQ..ICCN", n)
	}
	t.Logf("tshark: %d L2TP packets, none malformed; first ones:\n%s", n, strings.Join(l2tptest.Dissect(t, pcap, "l2tp")[:min(n, 8)], "\n"))
}

// TestInteropOurLACToXL2TPDLNS (bonus): our LAC dials xl2tpd as LNS; the
// tunnel and the session reach established, then xl2tpd drops the call
// because pppd cannot run here.
func TestInteropOurLACToXL2TPDLNS(t *testing.T) {
	testenv.RequireRoot(t)
	xl2tpd := testenv.RequireBinary(t, "xl2tpd")
	dir := t.TempDir()
	ns := l2tptest.Netns(t, "h2l")
	conf := filepath.Join(dir, "xl2tpd.conf")
	os.WriteFile(conf, []byte(`[global]
port = 1701
listen-addr = 127.0.0.1
access control = no
debug tunnel = yes
[lns default]
ip range = 10.99.0.10-10.99.0.20
local ip = 10.99.0.1
require authentication = no
length bit = yes
`), 0o600)
	x := l2tptest.Start(t, ns, xl2tpd, "-D", "-c", conf, "-p", filepath.Join(dir, "pid"), "-C", filepath.Join(dir, "control"))
	if !x.WaitOutput("Listening on IP address", 10*time.Second) {
		t.Fatalf("xl2tpd did not start:\n%s", x.Output())
	}
	conn := l2tptest.ListenUDP(t, ns, "127.0.0.1:0")
	var st l2tp.Stats
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tun, err := l2tp.Dial(ctx, conn, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1701}, l2tp.Config{Stats: &st, HostName: "fleetgate-lac"})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, x.Output())
	}
	s, err := tun.OpenSession(ctx)
	if err != nil {
		t.Fatalf("session: %v\n%s", err, x.Output())
	}
	if st.TunnelsEstablished.Load() != 1 || st.SessionsEstablished.Load() != 1 {
		t.Fatalf("counters: tunnels %d sessions %d", st.TunnelsEstablished.Load(), st.SessionsEstablished.Load())
	}
	if !x.WaitOutput("Call established with 127.0.0.1", 5*time.Second) {
		t.Fatalf("xl2tpd did not log the call:\n%s", x.Output())
	}
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
