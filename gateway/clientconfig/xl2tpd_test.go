package clientconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
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
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "xl2tpd")
	ipBin := testenv.RequireBinary(t, "ip")
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
	dir := t.TempDir()
	opts := filepath.Join(dir, "options.xl2tpd")
	conf = strings.Replace(conf, "/etc/ppp/options.xl2tpd.fleetgate", opts, 1)
	if err := os.WriteFile(filepath.Join(dir, "xl2tpd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(opts, []byte(section(out, "/etc/ppp/options.xl2tpd.fleetgate")), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("fgxl%d", os.Getpid()%100000)
	if o, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, o)
	}
	t.Cleanup(func() { _ = exec.Command(ipBin, "netns", "del", ns).Run() })
	_ = exec.Command(ipBin, "-n", ns, "link", "set", "lo", "up").Run()
	_ = exec.Command(ipBin, "-n", ns, "addr", "add", "192.0.2.10/32", "dev", "lo").Run()
	cmd := exec.Command(ipBin, "netns", "exec", ns, bin, "-D", "-c", filepath.Join(dir, "xl2tpd.conf"),
		"-p", filepath.Join(dir, "xl2tpd.pid"), "-C", filepath.Join(dir, "l2tp-control"), "-s", filepath.Join(dir, "l2tp-secrets"))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log strings.Builder
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("xl2tpd exited:\n%s", log.String())
			}
			log.WriteString(l + "\n")
			if strings.Contains(l, "parse error") || strings.Contains(l, "Unknown field") || strings.Contains(strings.ToLower(l), "error on line") {
				t.Fatalf("xl2tpd rejects our config: %s\n%s", l, log.String())
			}
			// autodial: it opens a tunnel to the LNS from the [lac] section.
			if strings.Contains(l, "Connecting to host 192.0.2.10") {
				t.Logf("xl2tpd:\n%s", log.String())
				return
			}
		case <-timeout:
			t.Fatalf("xl2tpd did not start dialling within 10s:\n%s", log.String())
		}
	}
}
