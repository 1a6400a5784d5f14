package ike

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// capture is a realpeer capture (wire-sized: segmentation offloads off,
// no packet over the link MTU) of IKE on dev in host h.
type capture struct {
	rc   *realpeer.Capture
	file string
}

func startCapture(t *testing.T, h *netns.Host, dev string) *capture {
	t.Helper()
	rc := realpeer.StartCapture(t, h, dev, "udp port 500 or udp port 4500")
	return &capture{rc: rc, file: rc.Path}
}

func (c *capture) stop() { c.rc.Stop() }

// waitFor waits until the capture holds n packets matching filter.
func (c *capture) waitFor(filter string, n int) { c.rc.WaitFor(filter, n) }

// fields runs tshark over the capture and returns one line per packet.
func (c *capture) fields(t *testing.T, opts []string, filter string, fields ...string) []string {
	t.Helper()
	args := append([]string{"-r", c.file, "-Y", filter, "-T", "fields"}, opts...)
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command("tshark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestInteropCaptureWellFormed captures a PSK exchange with charon and has
// Wireshark's dissector judge it: no malformed packets, and with our keys
// in its ikev1_decryption_table it decrypts Main Mode 5/6 and Quick Mode.
func TestInteropCaptureWellFormed(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	tc := interopCases[0]
	ns := newNetnsPair(t)
	conf, files, set := interopSetup(t, tc, false)
	ch := startCharon(t, ns.peer, conf, files)
	cp := startCapture(t, ns.peer, "a")
	var mu sync.Mutex
	var uat string
	e, events := interopEngine(t, ns.ours, func(c *Config) {
		set(c)
		c.OnKeys = func(i, _ [8]byte, key []byte) {
			mu.Lock()
			uat = fmt.Sprintf(`uat:ikev1_decryption_table:%s,%s`, hex.EncodeToString(i[:]), hex.EncodeToString(key))
			mu.Unlock()
		}
	})
	if err := e.Dial(netip.MustParseAddrPort(ourAddr+":500"), netip.MustParseAddrPort(charonAddr+":500")); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, events, EventChildUp)
	ch.waitLog(t, "unable to install")
	cp.waitFor("isakmp", 9) // 6 Main Mode + 3 Quick Mode at least
	cp.stop()
	all := cp.fields(t, nil, "isakmp", "frame.number")
	if len(all) < 9 { // 6 Main Mode + 3 Quick Mode at least
		t.Fatalf("captured %d ISAKMP packets, want at least 9", len(all))
	}
	if bad := cp.fields(t, nil, "_ws.malformed || _ws.expert.severity >= 6291456", "frame.number", "_ws.expert.message"); len(bad) > 0 {
		t.Errorf("tshark flags packets as malformed or erroneous:\n%s", strings.Join(bad, "\n"))
	}
	mu.Lock()
	opt := []string{"-o", uat}
	mu.Unlock()
	// Decrypted, MM5/MM6 carry ID payloads and Quick Mode the L2TP
	// selectors; without our keys tshark sees neither.
	if n := len(cp.fields(t, nil, "isakmp.id.type", "frame.number")); n != 0 {
		t.Fatalf("tshark saw %d ID payloads without keys: the exchange was not encrypted", n)
	}
	ids := cp.fields(t, opt, "isakmp.exchangetype == 2 && isakmp.id.type", "frame.number")
	qm := cp.fields(t, opt, "isakmp.exchangetype == 32 && isakmp.id.data.ipv4_addr == "+ourAddr, "frame.number")
	if len(ids) < 2 || len(qm) < 2 {
		t.Errorf("with our keys tshark decrypted %d Main Mode ID and %d Quick Mode nonce packets, want >= 2 each", len(ids), len(qm))
	}
}
