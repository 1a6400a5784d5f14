package realpeer_test

import (
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// A typical interop test: SoftEther as the gateway in "gw", a capture on
// the edge's uplink, our code (here charon stands in) in "edge" behind a
// NAT, then tshark must find nothing malformed. (Not run: examples have no
// *testing.T; this shows the calls.)
func Example() {
	var t *testing.T // the test's own
	topo := netns.New(t, netns.Options{NAT: true})
	edge, gw := topo.Host("edge"), topo.Host("gw")
	realpeer.StartSoftEther(t, gw, realpeer.SoftEtherConfig{PSK: "fgpsk1234", Users: map[string]string{"site1": "pw1"}})
	capture := realpeer.StartCapture(t, edge, "nat", "udp port 500 or udp port 4500")
	c := realpeer.StartCharon(t, edge, realpeer.CharonConfig{Swanctl: "connections { ... } secrets { ... }"})
	_, _ = c.Initiate(t.Context(), "l2tp", 10*time.Second)
	c.WaitLog(t, 10*time.Second, "IKE_SA fg[1] established")
	if bad := realpeer.Malformed(t, capture.Stop()); len(bad) > 0 {
		t.Errorf("malformed: %q", bad)
	}
}
