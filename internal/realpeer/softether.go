package realpeer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Debian's softether-vpnserver paths (5.01).
const (
	softetherServer = "/usr/libexec/softether/vpnserver/vpnserver"
	softetherCmd    = "/usr/libexec/softether/vpncmd/vpncmd"
)

// softetherDirs are the fixed directories the Debian build writes to: its
// configuration and state (vpn_server.config, chain certs), its logs, its
// runtime files (.pid, .ctl) and temporary files.
var softetherDirs = []struct{ private, system string }{
	{"lib", "/var/lib/softether"},
	{"log", "/var/log/softether"},
	{"run", "/run/softether"},
	{"tmp", "/tmp"},
}

// softetherWrapper runs under "unshare -m --propagation private": it
// bind-mounts the private directories over the system ones, then execs the
// command in the namespace ("-" for the root namespace).
const softetherWrapper = `#!/bin/sh
D=$1; NS=$2; shift 2
mount --bind "$D/lib" /var/lib/softether &&
mount --bind "$D/log" /var/log/softether &&
mount --bind "$D/run" /run/softether &&
mount --bind "$D/tmp" /tmp || exit 1
if [ "$NS" = - ]; then exec "$@"; fi
exec ip netns exec "$NS" "$@"
`

// SoftEtherConfig configures StartSoftEther. The zero value gives hub
// DEFAULT with SecureNAT, L2TP/IPsec and raw L2TP on, PSK "fleetgate" and
// user "site1" / "pw1".
type SoftEtherConfig struct {
	// Hub is the virtual hub (default "DEFAULT", which exists already).
	Hub string
	// Users maps user names to passwords (PAP and MS-CHAPv2 both work).
	Users map[string]string
	// PSK is the IPsec pre-shared key (SoftEther caps it at 9 characters
	// for some clients; keep it short).
	PSK string
	// NoSecureNAT, NoL2TPIPsec and NoRawL2TP turn the defaults off.
	NoSecureNAT, NoL2TPIPsec, NoRawL2TP bool
}

// SoftEther is a running SoftEther VPN server in a private mount
// namespace: its fixed directories are bind-mounted from Dir, so parallel
// tests do not share state and every test gets a fresh server (SoftEther
// may ignore a source address for minutes after failed sessions).
type SoftEther struct {
	// Dir is the private directory (lib, log, run, tmp).
	Dir string
	// Hub is the configured hub.
	Hub string
	// Proc is the vpnserver process group (it forks a worker).
	Proc *netns.Proc

	ns string
}

// StartSoftEther starts vpnserver in h (a host is required: the server
// binds fixed ports 443, 992, 1194, 5555, 500, 4500, 1701), configures it
// with vpncmd and waits until UDP 500 and 1701 are open.
func StartSoftEther(t testing.TB, h *netns.Host, cfg SoftEtherConfig) *SoftEther {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "vpnserver")
	for _, b := range []string{softetherServer, softetherCmd} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("realpeer: %v (Debian's softether-vpnserver and softether-vpncmd)", err)
		}
	}
	if h == nil {
		t.Fatal("realpeer: StartSoftEther needs a host (it binds fixed ports)")
	}
	if cfg.Hub == "" {
		cfg.Hub = "DEFAULT"
	}
	if cfg.Users == nil {
		cfg.Users = map[string]string{"site1": "pw1"}
	}
	if cfg.PSK == "" {
		cfg.PSK = "fleetgate"
	}
	s := &SoftEther{Dir: privateDir(t, "softether"), Hub: cfg.Hub, ns: h.NS}
	for _, d := range softetherDirs {
		// The system directories are only mount points here.
		if err := os.MkdirAll(d.system, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(s.Dir, d.private), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(s.Dir, "wrapper.sh"), []byte(softetherWrapper))
	if err := os.Chmod(filepath.Join(s.Dir, "wrapper.sh"), 0o700); err != nil {
		t.Fatal(err)
	}
	// The server forks a worker, which would outlive a killed test binary
	// (Pdeathsig reaches only our direct child). In its own PID namespace
	// the worker dies with the namespace's init, which --kill-child ties
	// to unshare, which netns.Start ties to the test binary.
	cmd := exec.Command("unshare", "-m", "-p", "--fork", "--kill-child", "--propagation", "private",
		filepath.Join(s.Dir, "wrapper.sh"), s.Dir, s.ns, softetherServer, "execsvc")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.Proc = netns.Start(t, cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SoftEther server log:\n%s", s.Log())
		}
	})
	if !poll(30*time.Second, func() bool { _, err := s.Cmd("", "ServerInfoGet"); return err == nil }) {
		t.Fatalf("%v: SoftEther's admin port never answered:\n%s", ErrNotReady, s.Proc.Output())
	}
	if cfg.Hub != "DEFAULT" {
		s.MustCmd(t, "", "HubCreate", cfg.Hub, "/PASSWORD:")
	}
	for u, pw := range cfg.Users {
		s.MustCmd(t, cfg.Hub, "UserCreate", u, "/GROUP:none", "/REALNAME:none", "/NOTE:none")
		s.MustCmd(t, cfg.Hub, "UserPasswordSet", u, "/PASSWORD:"+pw)
	}
	if !cfg.NoSecureNAT {
		s.MustCmd(t, cfg.Hub, "SecureNatEnable")
	}
	yn := func(off bool) string {
		if off {
			return "no"
		}
		return "yes"
	}
	s.MustCmd(t, "", "IPsecEnable", "/L2TP:"+yn(cfg.NoL2TPIPsec), "/L2TPRAW:"+yn(cfg.NoRawL2TP),
		"/ETHERIP:no", "/PSK:"+cfg.PSK, "/DEFAULTHUB:"+cfg.Hub)
	var ports []string
	if !cfg.NoL2TPIPsec {
		ports = append(ports, ":500 ", ":4500 ")
	}
	if !cfg.NoRawL2TP {
		ports = append(ports, ":1701 ")
	}
	var ss string
	if !poll(15*time.Second, func() bool {
		out, _ := h.Command("ss", "-Hlun").Output()
		ss = string(out)
		return containsAll(ss, ports)
	}) {
		t.Fatalf("%v: SoftEther did not open UDP %v:\n%s", ErrNotReady, ports, ss)
	}
	return s
}

func (s *SoftEther) command(argv ...string) *exec.Cmd {
	return exec.Command("unshare", append([]string{"-m", "--propagation", "private",
		filepath.Join(s.Dir, "wrapper.sh"), s.Dir, s.ns}, argv...)...)
}

// Cmd runs one vpncmd command against the server (on hub, or server-wide
// when hub is empty) and returns its output; the error is set unless vpncmd
// reports "The command completed successfully".
func (s *SoftEther) Cmd(hub string, args ...string) (string, error) {
	a := []string{softetherCmd, "localhost:5555", "/SERVER"}
	if hub != "" {
		a = append(a, "/HUB:"+hub)
	}
	a = append(append(a, "/CMD"), args...)
	out, err := s.command(a...).CombinedOutput()
	if err == nil && !bytes.Contains(out, []byte("The command completed successfully")) {
		err = fmt.Errorf("realpeer: vpncmd %s did not complete", strings.Join(args, " "))
	}
	return string(out), err
}

// MustCmd is Cmd that fails the test on error.
func (s *SoftEther) MustCmd(t testing.TB, hub string, args ...string) string {
	t.Helper()
	out, err := s.Cmd(hub, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// Log returns the server's log files (server_log, security_log) so far.
func (s *SoftEther) Log() string {
	var b strings.Builder
	for _, sub := range []string{"server_log", "security_log"} {
		files, _ := filepath.Glob(filepath.Join(s.Dir, "log", sub, "*.log"))
		for _, f := range files {
			c, _ := os.ReadFile(f)
			b.Write(c)
		}
	}
	return b.String()
}

// WaitLog waits until the server log contains every string in want and
// returns it; it fails the test after timeout.
func (s *SoftEther) WaitLog(t testing.TB, timeout time.Duration, want ...string) string {
	t.Helper()
	var log string
	if !poll(timeout, func() bool { log = s.Log(); return containsAll(log, want) }) {
		t.Fatalf("SoftEther's log lacks %q after %v", want, timeout)
	}
	return log
}
