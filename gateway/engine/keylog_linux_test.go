package engine_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestKeylogDecryptsCapture: debug.keylog_dir makes the gateway write a
// key log that tshark takes as is. The gateway's sockets are dual stack
// ([::]), as with listen.address "::": its local address for an IPv4 peer
// is "::", which made the esp_sa lines say "IPv6" and Wireshark decrypt
// nothing. A reload turns the key log off: the next SA writes nothing.
func TestKeylogDecryptsCapture(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "tshark")
	topo := netns.Pair(t)
	gw, site := topo.Host("a"), topo.Host("b")
	kdir := filepath.Join(t.TempDir(), "keylog")
	capture := realpeer.StartCapture(t, gw, "any", "udp port 500 or udp port 4500")
	dual := func(port int) net.PacketConn {
		c, err := gw.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g := startGateway(t, parseConfig(t, fmt.Sprintf("debug: {keylog_dir: %q}\n", kdir)), engine.Config{IKEConn: dual(500), NATTConn: dual(4500)})
	client := func(port int) l2tpipsec.ClientConfig {
		return l2tpipsec.ClientConfig{
			Gateway: gw.Addr.String() + ":500", NATTPort: 4500,
			IKEConn: listenIn(t, site, fmt.Sprintf("0.0.0.0:%d", port)), NATTConn: listenIn(t, site, fmt.Sprintf("0.0.0.0:%d", port+1)),
			PSK: []byte(testPSK), LocalID: &ike.Identification{Type: ike.IDFQDN, Data: []byte("hall7.sites.example")},
			Username: "hall7", Password: "pw7",
		}
	}
	tn, _ := dial(t, client(500))
	waitFor(t, "hall7 registered", func() bool { return g.srv.Env().Sessions.Len() == 1 })
	read := func(f string) []string {
		b, err := os.ReadFile(filepath.Join(kdir, f))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	espLines, ikeLines := read(keylog.ESPFile), read(keylog.IKEv1File)
	if len(espLines) != 2 || len(ikeLines) != 1 {
		t.Fatalf("key log: %d esp_sa and %d ikev1 lines, want 2 and 1:\n%s", len(espLines), len(ikeLines), strings.Join(espLines, "\n"))
	}
	for _, l := range espLines {
		if !strings.HasPrefix(l, `"IPv4",`) {
			t.Errorf("esp_sa line for an IPv4 peer: %s", l)
		}
	}
	_ = tn.Close()
	pcap := capture.Stop()
	opts := []string{"-o", "esp.enable_encryption_decode:TRUE"}
	for _, f := range []string{keylog.IKEv1File, keylog.ESPFile} {
		for _, l := range read(f) {
			opts = append(opts, "-o", "uat:"+f+":"+l)
		}
	}
	sum := realpeer.Summary(t, pcap, opts...)
	for _, want := range []string{"L2TP", "LCP", "IPCP"} {
		if !strings.Contains(sum, want) {
			t.Errorf("decrypted capture lacks %s:\n%s", want, sum)
		}
	}

	// Off by reload: a new SA adds no line.
	if _, err := g.srv.Reload(parseConfig(t, "")); err != nil {
		t.Fatal(err)
	}
	dial(t, client(1500))
	waitFor(t, "hall7 registered again", func() bool { return g.srv.Env().Sessions.Len() == 1 })
	if e, i := read(keylog.ESPFile), read(keylog.IKEv1File); len(e) != 2 || len(i) != 1 {
		t.Errorf("key log off by reload, yet it grew to %d esp_sa and %d ikev1 lines", len(e), len(i))
	}
}
