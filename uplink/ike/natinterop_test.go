package ike

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// natTopology: the inner host behind a NAPT router, the outer host on the
// "internet" (TEST-NET-2):
//
//	inner 10.0.0.2 --fgni/fgnr-- router 10.0.0.1 | 198.51.100.254 --fgno/fgnx-- outer 198.51.100.2
//	                              (nft masquerade out of fgno)
type natTopology struct{ inner, router, outer string }

const (
	innerAddr = "10.0.0.2"
	outerAddr = "198.51.100.2"
	natPublic = "198.51.100.254"
	natPSK    = "fleetgate nat psk"
)

func newNATTopology(t *testing.T) natTopology {
	t.Helper()
	testenv.RequireBinary(t, "nft")
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	n := natTopology{inner: "fgikeI" + id, router: "fgikeR" + id, outer: "fgikeO" + id}
	for _, ns := range []string{n.inner, n.router, n.outer} {
		ns := ns
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", n.inner, "link", "add", "fgni", "type", "veth", "peer", "name", "fgnr", "netns", n.router)
	run(t, "ip", "-n", n.router, "link", "add", "fgno", "type", "veth", "peer", "name", "fgnx", "netns", n.outer)
	run(t, "ip", "-n", n.inner, "addr", "add", innerAddr+"/24", "dev", "fgni")
	run(t, "ip", "-n", n.router, "addr", "add", "10.0.0.1/24", "dev", "fgnr")
	run(t, "ip", "-n", n.router, "addr", "add", natPublic+"/24", "dev", "fgno")
	run(t, "ip", "-n", n.outer, "addr", "add", outerAddr+"/24", "dev", "fgnx")
	for ns, dev := range map[string]string{n.inner: "fgni", n.outer: "fgnx"} {
		run(t, "ip", "-n", ns, "link", "set", dev, "up")
	}
	run(t, "ip", "-n", n.router, "link", "set", "fgnr", "up")
	run(t, "ip", "-n", n.router, "link", "set", "fgno", "up")
	run(t, "ip", "-n", n.inner, "route", "add", "default", "via", "10.0.0.1")
	run(t, "ip", "netns", "exec", n.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	rules := `table ip fgnat {
  chain post { type nat hook postrouting priority 100; oifname "fgno" masquerade random; }
}`
	cmd := exec.Command("ip", "netns", "exec", n.router, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	return n
}

func natSwanctl(charonAddr, charonID, peerAddrs, peerID, start string) string {
	return fmt.Sprintf(`connections {
  fg {
    version = 1
    local_addrs = %s
    remote_addrs = %s
    proposals = aes256-sha256-modp2048
    dpd_delay = 0
    local { auth = psk
      id = %s }
    remote { auth = psk
      id = %s }
    children {
      l2tp {
        mode = transport
        local_ts = dynamic[udp/1701]
        remote_ts = dynamic[udp]
        esp_proposals = aes128gcm16
        start_action = %s
      }
    }
  }
}
secrets { ike-fg { secret = "%s"
    id-a = %s
    id-b = %s } }
`, charonAddr, peerAddrs, charonID, peerID, start, natPSK, charonID, peerID)
}

func natSet(c *Config) {
	c.PSK = func(netip.Addr) ([]byte, bool) { return []byte(natPSK), true }
	c.IKEProposals = MustProposals("aes256-sha256-modp2048")
	c.ESPProposals = MustESPProposals("aes128gcm16")
	c.AllowRawESP = true // so NAT-D reports only the real NAT
}

// TestInteropBehindNATToCharon: our initiator behind an nftables NAPT
// dials charon; NAT-D must detect the NAT and both float to 4500.
func TestInteropBehindNATToCharon(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	n := newNATTopology(t)
	ch := startCharon(t, n.outer, natSwanctl(outerAddr, outerAddr, "%any", innerAddr, "none"), nil)
	e, events := interopEngineAt(t, n.inner, innerAddr, natSet)
	if err := e.Dial(netip.MustParseAddrPort(innerAddr+":500"), netip.MustParseAddrPort(outerAddr+":500")); err != nil {
		t.Fatal(err)
	}
	c := nextEvent(t, events, EventChildUp).Child
	if !c.Encap || c.Local.Port() != 4500 || c.Remote != netip.MustParseAddrPort(outerAddr+":4500") {
		t.Errorf("child: encap %v, %v -> %v; want UDP-encapsulated 4500 -> %s:4500", c.Encap, c.Local, c.Remote, outerAddr)
	}
	ch.waitLog(t, "remote host is behind NAT", "IKE_SA fg[1] established", "ESP:AES_GCM_16_128")
	ch.waitLog(t, "unable to install")
}

// TestInteropCharonBehindNAT: charon behind the NAPT dials our responder,
// the usual site-to-gateway case.
func TestInteropCharonBehindNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	n := newNATTopology(t)
	_, events := interopEngineAt(t, n.outer, outerAddr, natSet)
	ch := startCharon(t, n.inner, natSwanctl(innerAddr, innerAddr, outerAddr, outerAddr, "start"), nil)
	up := nextEvent(t, events, EventIKEUp)
	if up.Remote.Addr() != netip.MustParseAddr(natPublic) || up.Remote.Port() == 500 {
		t.Errorf("peer address %v: want the NAT's public address, floated off port 500", up.Remote)
	}
	if got, _ := up.Peer.ID.Addr(); got != netip.MustParseAddr(innerAddr) {
		t.Errorf("peer ID %v, want %s", got, innerAddr)
	}
	ch.waitLog(t, "local host is behind NAT", "IKE_SA fg[1] established", "ESP:AES_GCM_16_128")
	// charon sends HASH(3) only after installing the SA, which fails here.
	ch.waitLog(t, "unable to install")
}
