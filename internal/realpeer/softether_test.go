package realpeer

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestCharonToSoftEther: charon as IKEv1 initiator against SoftEther's
// L2TP/IPsec completes Main Mode and Quick Mode with an AES-CBC +
// HMAC-SHA1 ESP proposal (SoftEther accepts no SHA2 or GCM in ESP); then
// installing the SA fails in this kernel with netlink "Protocol not
// supported". The assertions stop there.
func TestCharonToSoftEther(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")
	StartSoftEther(t, b, SoftEtherConfig{PSK: "fgpsk1234"})
	conf := ikev1Conn(a.Addr.String(), b.Addr.String(), "psk", a.Addr.String(), "%any", "") +
		"secrets { ike-se { secret = \"fgpsk1234\" } }\n"
	c := StartCharon(t, a, CharonConfig{Swanctl: conf})
	out, err := c.Initiate(t.Context(), "l2tp", 15*time.Second)
	log := c.WaitLog(t, 15*time.Second, "IKE_SA fg[1] established",
		"selected proposal: ESP:AES_CBC_128/HMAC_SHA1_96", "received netlink error: Protocol not supported")
	// SoftEther always claims to be behind NAT: Quick Mode runs on 4500.
	if !containsAll(log, []string{"selected proposal: IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",
		"generating QUICK_MODE request", "sending packet: from 192.0.2.1[4500] to 192.0.2.2[4500]"}) {
		t.Errorf("charon's log lacks the IKE proposal\nswanctl (%v):\n%s", err, out)
	}
}

// TestXL2TPDToSoftEtherRawL2TP: xl2tpd as LAC against SoftEther's raw
// L2TP brings the tunnel and the session up (then pppd fails here).
func TestXL2TPDToSoftEtherRawL2TP(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")
	StartSoftEther(t, b, SoftEtherConfig{NoL2TPIPsec: true})
	x := StartXL2TPD(t, a, XL2TPDConfig{LNS: netip.AddrPortFrom(b.Addr, 1701)})
	x.WaitOutput(t, 15*time.Second,
		fmt.Sprintf("Connection established to %s, 1701", b.Addr),
		fmt.Sprintf("Call established with %s", b.Addr),
		"pppd exited for call") // no /dev/ppp in this kernel
}
