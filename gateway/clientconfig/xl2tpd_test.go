package clientconfig

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// section extracts the body of "# ---- NAME ----" up to the next marker.
func section(out, name string) string {
	start := strings.Index(out, "# ---- "+name+" ----\n")
	if start < 0 {
		return ""
	}
	body := out[start+len("# ---- "+name+" ----\n"):]
	if end := strings.Index(body, "\n# ---- "); end >= 0 {
		body = body[:end]
	}
	return body
}

// TestXl2tpdAcceptsOurConfig runs the real xl2tpd (in a fresh network
// namespace, so no port clashes) on the xl2tpd.conf we print and checks it
// parses the file and starts dialling the LNS (pppd itself cannot run here).
func TestXl2tpdAcceptsOurConfig(t *testing.T) {
	c := load(t)
	p, err := FromConfig(c, "ops-laptop", "192.0.2.10")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(FormatStrongSwan, p)
	if err != nil {
		t.Fatal(err)
	}
	conf := section(out, "/etc/xl2tpd/xl2tpd.conf")
	if !strings.Contains(conf, "[lac fleetgate]") {
		t.Fatalf("no xl2tpd.conf section in:\n%s", out)
	}
	opts := filepath.Join(t.TempDir(), "options.xl2tpd")
	conf = strings.Replace(conf, "/etc/ppp/options.xl2tpd.fleetgate", opts, 1)
	if err := os.WriteFile(opts, []byte(section(out, "/etc/ppp/options.xl2tpd.fleetgate")), 0o600); err != nil {
		t.Fatal(err)
	}
	h := netns.One(t)
	if o, err := h.Run(context.Background(), "ip", "addr", "add", "192.0.2.10/32", "dev", "lo"); err != nil {
		t.Fatalf("ip addr add: %v %s", err, o)
	}
	x := realpeer.StartXL2TPD(t, h, realpeer.XL2TPDConfig{Conf: conf})
	var log string
	// autodial: it opens a tunnel to the LNS from the [lac] section.
	ok := poll(10*time.Second, func() bool {
		log = x.Proc.Output()
		select {
		case <-x.Proc.Done():
			return true
		default:
		}
		return strings.Contains(log, "Connecting to host 192.0.2.10")
	})
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "parse error") || strings.Contains(l, "Unknown field") || strings.Contains(strings.ToLower(l), "error on line") {
			t.Fatalf("xl2tpd rejects our config: %s\n%s", l, log)
		}
	}
	if !ok || !strings.Contains(log, "Connecting to host 192.0.2.10") {
		t.Fatalf("xl2tpd did not start dialling within 10s:\n%s", log)
	}
	t.Logf("xl2tpd:\n%s", log)
}

// poll calls cond every 50 ms until it holds or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // watching another process's output
	}
	return true
}
