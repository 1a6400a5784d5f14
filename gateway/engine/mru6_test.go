package engine_test

import (
	"net"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/engine"
)

// TestMRUFollowsOuterFamily: the LCP MRU the gateway announces is the
// session's effective MTU for its ESP suite and outer family, so a site
// sending full-size packets is never fragmented on the outer path: with
// mtu 1500 and aes128gcm16, 1414 over IPv4 and 1394 over IPv6 (20 bytes
// more of outer header), equal to the MTU the gateway's router uses.
func TestMRUFollowsOuterFamily(t *testing.T) {
	cfg := parseConfig(t, "mtu: 1500\n")
	mtus := map[string]int{}
	for _, fam := range []struct{ name, addr string }{{"ipv4", "127.0.0.1"}, {"ipv6", "[::1]"}} {
		listen := func() net.PacketConn {
			c, err := net.ListenPacket("udp", fam.addr+":0")
			if err != nil {
				t.Fatalf("listen on %s (IPv6 loopback needed): %v", fam.addr, err)
			}
			return c
		}
		g := startGateway(t, cfg, engine.Config{IKEConn: listen(), NATTConn: listen()})
		cc := g.clientConfig("hall7", "pw7")
		cc.LocalIKE, cc.LocalNATT = fam.addr+":0", fam.addr+":0"
		tn, _ := dial(t, cc)
		waitFor(t, "hall7 registered", func() bool { return g.srv.Env().Sessions.Lookup(tn.LocalAddr()) != nil })
		sess := g.srv.Env().Sessions.Lookup(tn.LocalAddr())
		if tn.MTU() != sess.MTU() {
			t.Fatalf("%s: MRU announced %d, the router's session MTU %d", fam.name, tn.MTU(), sess.MTU())
		}
		mtus[fam.name] = tn.MTU()
		_ = tn.Close()
		g.stop()
	}
	if mtus["ipv4"] != 1414 || mtus["ipv6"] != 1394 {
		t.Fatalf("MRU over IPv4 %d (want 1414), over IPv6 %d (want 1394)", mtus["ipv4"], mtus["ipv6"])
	}
}
