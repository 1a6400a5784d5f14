package l2tptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SoftEther is a SoftEther VPN server running in namespace NS with its
// fixed state directories (/var/lib/softether, /var/log/softether,
// /run/softether, /tmp) bind-mounted from a private temporary directory in
// a private mount namespace, so parallel runs do not share state.
type SoftEther struct {
	t    testing.TB
	dir  string
	ns   string
	Proc *Proc
}

const softetherWrapper = `#!/bin/sh
# usage: wrapper DIR NS cmd... (run under unshare -m)
D=$1; NS=$2; shift 2
mount --bind "$D/lib" /var/lib/softether &&
mount --bind "$D/log" /var/log/softether &&
mount --bind "$D/run" /run/softether &&
mount --bind "$D/tmp" /tmp || exit 1
exec ip netns exec "$NS" "$@"
`

// StartSoftEther starts vpnserver in ns and waits until its admin port
// answers. The caller must have checked root and the vpnserver binary.
func StartSoftEther(t testing.TB, ns string) *SoftEther {
	t.Helper()
	for _, d := range []string{"/var/lib/softether", "/var/log/softether", "/run/softether"} {
		// Mount points only; the server's files go to the private copies.
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	for _, d := range []string{"lib", "log", "run", "tmp"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "wrapper.sh"), []byte(softetherWrapper), 0o755)
	s := &SoftEther{t: t, dir: dir, ns: ns}
	s.Proc = Start(t, "", s.argv("/usr/libexec/softether/vpnserver/vpnserver", "execsvc")...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := s.try("", "ServerInfoGet"); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("SoftEther admin port never answered: %s", s.Proc.Output())
		}
		time.Sleep(200 * time.Millisecond) // polling a starting daemon
	}
}

func (s *SoftEther) argv(cmd ...string) []string {
	return append([]string{"unshare", "-m", "--propagation", "private", filepath.Join(s.dir, "wrapper.sh"), s.dir, s.ns}, cmd...)
}

func (s *SoftEther) try(hub string, args ...string) (string, error) {
	a := []string{"/usr/libexec/softether/vpncmd/vpncmd", "localhost:5555", "/SERVER"}
	if hub != "" {
		a = append(a, "/HUB:"+hub)
	}
	a = append(append(a, "/CMD"), args...)
	argv := s.argv(a...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "The command completed successfully") {
		err = fmt.Errorf("vpncmd %v failed", args)
	}
	return string(out), err
}

// Cmd runs one vpncmd command (on hub, or server-wide when hub is empty)
// and fails the test if it does not complete.
func (s *SoftEther) Cmd(hub string, args ...string) string {
	s.t.Helper()
	out, err := s.try(hub, args...)
	if err != nil {
		s.t.Fatalf("vpncmd %v: %v\n%s", args, err, out)
	}
	return out
}
