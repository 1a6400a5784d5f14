package ike

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestInteropSoftEther: our initiator against SoftEther's L2TP/IPsec
// server, which accepts only MODP groups in phase 1 and HMAC-SHA1 in
// phase 2, forces NAT-T, and may start a Quick Mode of its own with
// 0.0.0.0/0 selectors.
func TestInteropSoftEther(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "vpnserver")
	ns := newNetnsPair(t)
	const key = "fgpsk2026"
	realpeer.StartSoftEther(t, ns.peer, realpeer.SoftEtherConfig{PSK: key})
	e, events := interopEngine(t, ns.ours, func(c *Config) {
		c.PSK = func(netip.Addr) ([]byte, bool) { return []byte(key), true }
		c.IKEProposals = MustProposals("aes256-sha256-ecp256,aes256-sha256-modp2048,aes128-sha1-modp2048")
		c.ESPProposals = MustESPProposals("aes128gcm16,aes256-sha1,aes128-sha1")
	})
	// SoftEther may need a moment after IPsecEnable to open UDP 500/4500:
	// our retransmissions cover that.
	if err := e.Dial(netip.MustParseAddrPort(ourAddr+":500"), netip.MustParseAddrPort(charonAddr+":500")); err != nil {
		t.Fatal(err)
	}
	up := nextEvent(t, events, EventIKEUp)
	t.Logf("SoftEther phase 1 up, peer ID %+v", up.Peer.ID)
	child := nextEvent(t, events, EventChildUp).Child
	if child.Suite.String() != "aes256-sha1" {
		t.Errorf("ESP suite: got %v, want aes256-sha1 (SoftEther's first acceptable)", child.Suite)
	}
	if !child.Encap || child.Remote.Port() != 4500 {
		t.Errorf("SoftEther forces NAT-T: got encap %v remote %v", child.Encap, child.Remote)
	}
	t.Logf("child %s in %08x out %08x role %v selectors %+v", child.Suite, child.InSPI, child.OutSPI, child.Role, child.Selectors)
	// SoftEther usually starts its own Quick Mode (0.0.0.0/0) right after.
	select {
	case ev := <-events:
		if ev.Kind == EventChildUp {
			t.Logf("peer-initiated child: role %v selectors %+v", ev.Child.Role, ev.Child.Selectors)
		}
	case <-time.After(3 * time.Second):
	}
}
