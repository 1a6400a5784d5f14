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

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

const charonConf = `charon {
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints kernel-netlink socket-default vici
  install_routes = no
  install_virtual_ip = no
  plugins {
    vici {
      socket = unix://%s
    }
  }
  filelog {
    stdout {
      path = /dev/stdout
      default = 1
    }
  }
}
`

// TestSwanctlLoadsOurConfig starts a private charon (own network namespace,
// own mount namespace so its pid file under /run is private, own
// strongswan.conf and vici socket) and loads the swanctl.conf we print with
// the real swanctl.
func TestSwanctlLoadsOurConfig(t *testing.T) {
	testenv.RequireRoot(t)
	charon := testenv.RequireBinary(t, "charon")
	swanctl := testenv.RequireBinary(t, "swanctl")
	ipBin := testenv.RequireBinary(t, "ip")
	unshare := testenv.RequireBinary(t, "unshare")
	dir := t.TempDir()
	sock := filepath.Join(dir, "charon.vici")
	if err := os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(fmt.Sprintf(charonConf, sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("fgsw%d", os.Getpid()%100000)
	if o, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, o)
	}
	t.Cleanup(func() { _ = exec.Command(ipBin, "netns", "del", ns).Run() })
	_ = exec.Command(ipBin, "-n", ns, "link", "set", "lo", "up").Run()
	cmd := exec.Command(ipBin, "netns", "exec", ns, unshare, "--mount", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs fgrun /run && exec "+charon)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(exited) }()
	var log strings.Builder
	logDone := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		close(logDone)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-exited:
			<-logDone
			t.Fatalf("charon exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("charon's vici socket did not appear")
		}
		time.Sleep(50 * time.Millisecond) // waiting for another process to create its socket
	}
	c := load(t)
	st := &pki.Store{Dir: filepath.Join(dir, "pki")}
	if _, err := st.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Issue(pki.IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.sites.example.net"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		identity string
		want     []string
	}{
		{"ops-laptop", []string{"loaded ike secret 'ike-fleetgate'", "loaded connection 'fleetgate'", "successfully loaded 1 connections, 0 unloaded"}},
		{"site-hall7", []string{"loaded certificate from", "site-hall7.crt", "loaded ECDSA key from", "loaded connection 'fleetgate'", "successfully loaded 1 connections"}},
	}
	for _, tt := range tests {
		p, err := FromConfig(c, tt.identity, "192.0.2.10")
		if err != nil {
			t.Fatal(err)
		}
		out, err := Render(FormatStrongSwan, p)
		if err != nil {
			t.Fatal(err)
		}
		body := section(out, "/etc/swanctl/conf.d/fleetgate.conf")
		if !strings.Contains(body, "connections {") {
			t.Fatalf("no swanctl section in:\n%s", out)
		}
		swdir := filepath.Join(dir, "swanctl-"+tt.identity)
		files := map[string]string{"swanctl.conf": body}
		if p.Identity.Auth == config.AuthCert {
			files["x509ca/ca.crt"] = filepath.Join(st.Dir, "ca.crt")
			files["x509/site-hall7.crt"] = filepath.Join(st.Dir, "certs", "site-hall7.crt")
			files["private/site-hall7.key"] = filepath.Join(st.Dir, "certs", "site-hall7.key")
		}
		for name, content := range files {
			if name != "swanctl.conf" {
				b, err := os.ReadFile(content)
				if err != nil {
					t.Fatal(err)
				}
				content = string(b)
			}
			path := filepath.Join(swdir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(swanctl, "--load-all", "--uri", "unix://"+sock)
		cmd.Env = append(os.Environ(), "SWANCTL_DIR="+swdir)
		res, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: swanctl --load-all: %v\n%s", tt.identity, err, res)
		}
		for _, want := range tt.want {
			if !strings.Contains(string(res), want) {
				t.Errorf("%s: swanctl output lacks %q:\n%s", tt.identity, want, res)
			}
		}
		conns, err := exec.Command(swanctl, "--list-conns", "--uri", "unix://"+sock).CombinedOutput()
		if err != nil {
			t.Fatalf("swanctl --list-conns: %v\n%s", err, conns)
		}
		for _, want := range []string{"fleetgate: IKEv1", "remote: 192.0.2.10", "fleetgate-l2tp: TRANSPORT", "local:  dynamic[udp/l2f]", "remote: dynamic[udp/l2f]"} {
			if !strings.Contains(string(conns), want) {
				t.Errorf("%s: --list-conns lacks %q:\n%s", tt.identity, want, conns)
			}
		}
		if p.Identity.Auth == config.AuthCert && !strings.Contains(string(conns), "id: site-hall7.sites.example.net") {
			t.Errorf("cert identity not used as local id:\n%s", conns)
		}
	}
}
