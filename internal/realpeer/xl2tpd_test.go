package realpeer

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestXL2TPDLACToLNS: xl2tpd as LAC dials xl2tpd as LNS; tunnel and call
// come up on both sides (pppd then fails for lack of /dev/ppp).
func TestXL2TPDLACToLNS(t *testing.T) {
	p := netns.Pair(t)
	lns := StartXL2TPD(t, p.Host("b"), XL2TPDConfig{})
	lac := StartXL2TPD(t, p.Host("a"), XL2TPDConfig{LNS: netip.AddrPortFrom(p.Host("b").Addr, 1701)})
	lac.WaitOutput(t, 10*time.Second, "Connection established to 192.0.2.2, 1701", "Call established with 192.0.2.2")
	lns.WaitOutput(t, 5*time.Second, "Connection established to 192.0.2.1, 1701", "Call established with 192.0.2.1")
}
