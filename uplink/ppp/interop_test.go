package ppp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestInteropSoftEtherRawL2TP: our LAC + PPP client (host a of a
// namespace pair) against SoftEther VPN server 5.01 (host b) with raw L2TP and SecureNAT, with MS-CHAPv2 and with PAP:
// IPCP address and DNS from SecureNAT, ICMP echo to its virtual gateway
// answered, clean LCP/CDN/StopCCN teardown, and no malformed packet in a
// tshark capture. A fresh server per case (SoftEther may shun an address
// after failed sessions).
func TestInteropSoftEtherRawL2TP(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "vpnserver")
	testenv.RequireBinary(t, "tshark")
	for _, method := range []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthPAP} {
		t.Run(method.String(), func(t *testing.T) {
			topo := netns.Pair(t)
			a, b := topo.Host("a"), topo.Host("b")
			// Hub DEFAULT, SecureNAT, raw L2TP and L2TP/IPsec, user site1/pw1.
			se := realpeer.StartSoftEther(t, b, realpeer.SoftEtherConfig{Users: map[string]string{"site1": "pw1"}})
			capture := realpeer.StartCapture(t, a, "b", "udp port 1701")

			conn, err := a.ListenPacket("udp4", a.Addr.String()+":0")
			if err != nil {
				t.Fatal(err)
			}
			var lst l2tp.Stats
			var pst ppp.Stats
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tun, err := l2tp.Dial(ctx, conn, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.Addr, 1701)), l2tp.Config{Stats: &lst, HostName: "fleetgate-site1"})
			if err != nil {
				t.Fatalf("tunnel: %v\n%s", err, se.Proc.Output())
			}
			sess, err := tun.OpenSession(ctx)
			if err != nil {
				t.Fatalf("session: %v", err)
			}
			c := ppp.New(sess, ppp.Config{Role: ppp.Client, Username: "site1", Password: "pw1", Methods: []ppp.AuthMethod{method}, Stats: &pst})
			replies := make(chan []byte, 16)
			c.SetPacketHandler(func(p []byte) { replies <- append([]byte(nil), p...) })
			sess.SetFrameHandler(c.Input)
			select {
			case <-c.Up():
			case <-c.Done():
				t.Fatalf("PPP failed: %v", c.Err())
			case <-ctx.Done():
				t.Fatalf("PPP did not come up")
			}
			info := c.Info()
			t.Logf("IPCP: %+v", info)
			subnet := netip.MustParsePrefix("192.168.30.0/24")
			gw := netip.MustParseAddr("192.168.30.1")
			if info.Method != method || !subnet.Contains(info.Local) || info.DNS[0] != gw {
				t.Fatalf("negotiated %+v, want %v, an address in %v and DNS %v", info, method, subnet, gw)
			}
			if method == ppp.AuthPAP {
				t.Logf("PAP Acks without Msg-Length: %d", pst.PAPAckNoMsgLen.Load())
			}
			// ICMP echo to SecureNAT's virtual gateway.
			got := false
			for seq := uint16(1); seq <= 20 && !got; seq++ {
				if err := c.WritePacket(pkttest.ICMPEcho(info.Local, gw, 0x4632, seq, "fleetgate-h2-ppp")); err != nil {
					t.Fatal(err)
				}
				timeout := time.After(500 * time.Millisecond)
			wait:
				for {
					select {
					case p := <-replies:
						if len(p) >= 28 && p[9] == 1 && p[20] == 0 && netip.AddrFrom4([4]byte(p[12:16])) == gw &&
							binary.BigEndian.Uint16(p[24:]) == 0x4632 {
							got = true
							break wait
						}
					case <-timeout:
						break wait
					}
				}
			}
			if !got {
				t.Fatalf("no ICMP echo reply from %v (packets in %d)", gw, pst.PacketsIn.Load())
			}
			// Clean disconnect: LCP Terminate, CDN, StopCCN.
			c.Close()
			if c.Err() != ppp.ErrClosed {
				t.Errorf("PPP close reason: %v", c.Err())
			}
			sess.Close()
			tun.Close()
			if lst.ControlRetransmits.Load() != 0 {
				t.Logf("control retransmits: %d", lst.ControlRetransmits.Load())
			}
			pcap := capture.Stop()
			// Judge our packets; SoftEther's own PAP Authenticate-Ack lacks
			// the Msg-Length byte and is flagged, as known.
			ours := fmt.Sprintf("udp.srcport == %d", conn.LocalAddr().(*net.UDPAddr).Port)
			if bad := realpeer.MalformedWhere(t, pcap, ours); len(bad) > 0 {
				t.Errorf("tshark flags %d of our packet(s) as malformed or erroneous:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			n := len(realpeer.Lines(t, pcap, "ppp"))
			auth := realpeer.Lines(t, pcap, "chap || pap")
			theirs := realpeer.Lines(t, pcap, "udp.srcport == 1701 && _ws.malformed")
			t.Logf("tshark: %d PPP packets, %d auth packets, none of ours malformed; SoftEther's malformed: %q", n, len(auth), theirs)
			if n < 10 || len(auth) < 2 {
				t.Errorf("capture: %d PPP and %d auth packets, want the whole exchange", n, len(auth))
			}
		})
	}
}
