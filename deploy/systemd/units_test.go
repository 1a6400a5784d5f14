package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

var units = []string{"fleetgate-gateway.service", "fleetgate-bridge.service"}

// maxExposure is the highest `systemd-analyze security` score accepted
// (0 = fully locked down, 10 = unprotected; measured: gateway 1.9, bridge 1.1).
const maxExposure = 2.5

// staged copies the units into a temporary directory with the daemon paths
// pointed at /bin/true, since verify checks that ExecStart= is executable.
func staged(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	exe := regexp.MustCompile(`/usr/local/bin/fleetgate-[a-z]+`)
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !exe.Match(b) {
			t.Fatalf("%s: no /usr/local/bin/fleetgate-* ExecStart", u)
		}
		if err := os.WriteFile(filepath.Join(dir, u), exe.ReplaceAll(b, []byte("/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUnitsVerify(t *testing.T) {
	sa := testenv.RequireBinary(t, "systemd-analyze")
	dir := staged(t)
	for _, u := range units {
		cmd := exec.Command(sa, "verify", "./"+u)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		// verify also lints installed units it loads as dependencies; keep
		// only the lines about ours.
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "fleetgate") {
				ours = append(ours, l)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("systemd-analyze verify %s: err=%v, complaints:\n%s", u, err, strings.Join(ours, "\n"))
		}
	}
}

func TestUnitsSecurityExposure(t *testing.T) {
	sa := testenv.RequireBinary(t, "systemd-analyze")
	dir := staged(t)
	re := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range units {
		cmd := exec.Command(sa, "security", "--offline=yes", "--no-pager", "./"+u)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput() // exits non-zero above its own threshold
		m := re.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: no score in output:\n%s", u, out)
		}
		score, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s exposure %.1f", u, score)
		if score > maxExposure {
			t.Errorf("%s exposure = %.1f, want <= %.1f", u, score, maxExposure)
		}
	}
}

// TestUnitsLeastPrivilege pins the settings the brief calls for, so an edit
// that drops one fails here even where systemd-analyze is missing.
func TestUnitsLeastPrivilege(t *testing.T) {
	common := []string{"Type=notify", "User=fleetgate", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"PrivateTmp=yes", "StateDirectoryMode=0700", "ConfigurationDirectoryMode=0750",
		"SystemCallFilter=@system-service", "RestartSec=5s", "TasksMax=256", "LimitNOFILE=16384", "MemorySwapMax=0"}
	want := map[string][]string{
		"fleetgate-gateway.service": append([]string{"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
			"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "DeviceAllow=/dev/net/tun rw", "Restart=on-failure",
			"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "MemoryHigh=1536M", "MemoryMax=2G", "Environment=GOMEMLIMIT=1400MiB"}, common...),
		"fleetgate-bridge.service": append([]string{"CapabilityBoundingSet=", "AmbientCapabilities=", "PrivateDevices=yes",
			"Restart=always", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "MemoryHigh=640M", "MemoryMax=768M", "Environment=GOMEMLIMIT=600MiB"}, common...),
	}
	for u, lines := range want {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			have[strings.TrimSpace(l)] = true
		}
		for _, l := range lines {
			if !have[l] {
				t.Errorf("%s: missing line %q", u, l)
			}
		}
	}
}
