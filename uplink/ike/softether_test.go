package ike

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// A minimal SoftEther launcher (internal/realpeer had not landed): the
// server writes to fixed directories, so it runs in a private mount
// namespace with those directories bind-mounted from a temporary one.

const softetherWrapper = `#!/bin/sh
D=$1; NS=$2; shift 2
mount --bind "$D/lib" /var/lib/softether &&
mount --bind "$D/log" /var/log/softether &&
mount --bind "$D/run" /run/softether || exit 1
exec ip netns exec "$NS" "$@"
`

type softether struct {
	dir, ns string
	cmd     *exec.Cmd
}

func (s *softether) argv(cmd ...string) []string {
	return append([]string{"unshare", "-m", "--propagation", "private", filepath.Join(s.dir, "wrapper.sh"), s.dir, s.ns}, cmd...)
}

func (s *softether) vpncmd(args ...string) (string, error) {
	a := s.argv(append([]string{"/usr/libexec/softether/vpncmd/vpncmd", "localhost:5555", "/SERVER", "/CMD"}, args...)...)
	out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "The command completed successfully") {
		err = os.ErrInvalid
	}
	return string(out), err
}

func startSoftEther(t *testing.T, ns string) *softether {
	t.Helper()
	bin := testenv.RequireBinary(t, "vpnserver")
	for _, d := range []string{"/var/lib/softether", "/var/log/softether", "/run/softether"} {
		if err := os.MkdirAll(d, 0o755); err != nil { // mount points only
			t.Fatal(err)
		}
	}
	s := &softether{dir: plainTempDir(t), ns: ns}
	for _, d := range []string{"lib", "log", "run"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.dir, "wrapper.sh"), []byte(softetherWrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	a := s.argv(bin, "execsvc")
	s.cmd = exec.Command(a[0], a[1:]...)
	// vpnserver forks a worker: give it its own process group (stopped by
	// that group's ID below) and a file rather than a pipe for output, so
	// Wait cannot hang on a pipe the worker still holds.
	logf, err := os.Create(filepath.Join(s.dir, "vpnserver.out"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	pgid := s.cmd.Process.Pid
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		// The forked worker may outlive the parent: end the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := s.vpncmd("ServerInfoGet"); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("SoftEther admin port never answered")
		}
		time.Sleep(300 * time.Millisecond) // polling a starting daemon
	}
}

// TestInteropSoftEther: our initiator against SoftEther's L2TP/IPsec
// server, which accepts only MODP groups in phase 1 and HMAC-SHA1 in
// phase 2, forces NAT-T, and may start a Quick Mode of its own with
// 0.0.0.0/0 selectors.
func TestInteropSoftEther(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "vpnserver")
	ns := newNetnsPair(t)
	se := startSoftEther(t, ns.peer)
	const key = "fgpsk2026"
	if out, err := se.vpncmd("IPsecEnable", "/L2TP:yes", "/L2TPRAW:no", "/ETHERIP:no", "/PSK:"+key, "/DEFAULTHUB:DEFAULT"); err != nil {
		t.Fatalf("IPsecEnable: %v\n%s", err, out)
	}
	e, events := interopEngine(t, ns.ours, func(c *Config) {
		c.PSK = func(netip.Addr) ([]byte, bool) { return []byte(key), true }
		c.IKEProposals = MustProposals("aes256-sha256-ecp256,aes256-sha256-modp2048,aes128-sha1-modp2048")
		c.ESPProposals = MustESPProposals("aes128gcm16,aes256-sha1,aes128-sha1")
	})
	// SoftEther may need a moment after IPsecEnable to open UDP 500/4500:
	// our retransmissions cover that.
	if err := e.Dial(netip.MustParseAddrPort(ourAddr+":500"), netip.MustParseAddrPort(charonAddr+":500")); err != nil {
		t.Fatal(err)
	}
	up := nextEvent(t, events, EventIKEUp)
	t.Logf("SoftEther phase 1 up, peer ID %+v", up.Peer.ID)
	child := nextEvent(t, events, EventChildUp).Child
	if child.Suite.String() != "aes256-sha1" {
		t.Errorf("ESP suite: got %v, want aes256-sha1 (SoftEther's first acceptable)", child.Suite)
	}
	if !child.Encap || child.Remote.Port() != 4500 {
		t.Errorf("SoftEther forces NAT-T: got encap %v remote %v", child.Encap, child.Remote)
	}
	t.Logf("child %s in %08x out %08x role %v selectors %+v", child.Suite, child.InSPI, child.OutSPI, child.Role, child.Selectors)
	// SoftEther usually starts its own Quick Mode (0.0.0.0/0) right after.
	select {
	case ev := <-events:
		if ev.Kind == EventChildUp {
			t.Logf("peer-initiated child: role %v selectors %+v", ev.Child.Role, ev.Child.Selectors)
		}
	case <-time.After(3 * time.Second):
	}
}
