package ike

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// natTopology is internal/netns's site topology with NAT: "edge"
// (192.168.1.2) behind the "nat" host's nftables masquerade (public
// 198.51.100.2), and "wan" (198.51.100.1) on the internet side.
type natTopology struct{ inner, outer *netns.Host }

const (
	innerAddr = "192.168.1.2"
	outerAddr = "198.51.100.1"
	natPublic = "198.51.100.2"
	natPSK    = "fleetgate nat psk"
)

func newNATTopology(t *testing.T) natTopology {
	t.Helper()
	topo := netns.New(t, netns.Options{NAT: true})
	n := natTopology{inner: topo.Host("edge"), outer: topo.Host("wan")}
	if n.inner.Addr != netip.MustParseAddr(innerAddr) || n.outer.Addr != netip.MustParseAddr(outerAddr) {
		t.Fatalf("netns topology changed: edge %v, wan %v", n.inner.Addr, n.outer.Addr)
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

// TestInteropNoNATServerNotBehindNAT: charon dials our responder with no
// NAT in between and raw ESP off (the gateway's default). NAT-D still moves
// both to UDP encapsulation on 4500, but the way stock Windows accepts:
// charon believes it is itself behind a NAT ("local host is behind NAT")
// and never that the server is ("remote host is behind NAT", which makes
// Windows refuse the server unless a registry value is set).
func TestInteropNoNATServerNotBehindNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	ns := newNetnsPair(t)
	_, events := interopEngineAt(t, ns.ours, ourAddr, func(c *Config) {
		natSet(c)
		c.AllowRawESP = false
	})
	ch := startCharon(t, ns.peer, natSwanctl(charonAddr, charonAddr, ourAddr, ourAddr, "start"), nil)
	up := nextEvent(t, events, EventIKEUp)
	if up.Remote.Port() != 4500 {
		t.Errorf("peer %v: want it floated to 4500 (UDP encapsulation)", up.Remote)
	}
	log := ch.waitLog(t, "local host is behind NAT", "IKE_SA fg[1] established", "ESP:AES_GCM_16_128")
	ch.waitLog(t, "unable to install")
	if strings.Contains(ch.Log(), "remote host is behind NAT") {
		t.Errorf("charon believes the server is behind NAT:\n%s", log)
	}
}

// TestInteropServerBehindStaticNAT: our responder sits behind a 1:1 NAT
// (a cloud VM's public address, here nftables DNAT/SNAT on "wan" mapping
// 198.51.100.50 to gw's 203.0.113.2) and charon dials the public address.
// Its NAT-D would show the server behind a NAT; the responder answers with
// the hash the client computed for it, so charon still finds only itself
// behind a NAT: stock Windows needs no registry change for such a gateway.
func TestInteropServerBehindStaticNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	testenv.RequireBinary(t, "nft")
	topo := netns.New(t, netns.Options{})
	edge, wan, gw := topo.Host("edge"), topo.Host("wan"), topo.Host("gw")
	const public = "198.51.100.50"
	ctx := context.Background()
	if out, err := wan.Run(ctx, "ip", "addr", "add", public+"/32", "dev", "edge"); err != nil {
		t.Fatal(out, err)
	}
	nat := `table ip staticnat {
  chain pre { type nat hook prerouting priority -100; ip daddr ` + public + ` dnat to ` + gw.Addr.String() + `; }
  chain post { type nat hook postrouting priority 100; ip saddr ` + gw.Addr.String() + ` snat to ` + public + `; }
}
`
	cmd := wan.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nat)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	_, events := interopEngineAt(t, gw, gw.Addr.String(), func(c *Config) {
		natSet(c)
		c.AllowRawESP = false
	})
	ch := startCharon(t, edge, natSwanctl(edge.Addr.String(), edge.Addr.String(), public, gw.Addr.String(), "start"), nil)
	nextEvent(t, events, EventIKEUp)
	log := ch.waitLog(t, "local host is behind NAT", "IKE_SA fg[1] established", "ESP:AES_GCM_16_128")
	ch.waitLog(t, "unable to install")
	if strings.Contains(ch.Log(), "remote host is behind NAT") {
		t.Errorf("charon believes the server behind the static NAT is behind NAT:\n%s", log)
	}
}
