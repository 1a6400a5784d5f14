package deb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; {
		cmd := exec.Command(name, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		// dpkg does not wait for its lock: another dpkg or apt on this
		// host (a package install by another run's install-deps.sh)
		// holds it for a while.
		if err == nil || name != "dpkg" || !strings.Contains(out.String(), "lock") || time.Now().After(deadline) {
			return out.String(), err
		}
		time.Sleep(time.Second)
	}
}

// hostPackageLock serialises the host-wide part of TestPackage (the
// fleetgate package installed, checked and purged) between test processes
// on one machine, e.g. two `make test` runs side by side: without it one
// run purges the package the other is checking, or finds it installed.
// The lock is released when the test ends, after the purge.
func hostPackageLock(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/run/lock/fleetgate-deb-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %v for another run's package test", waited.Round(time.Second))
	}
	t.Cleanup(func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() })
}

func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestPackage is issue 22's package test: `make dist` for amd64 (binaries
// from the build cache, see TESTBUILD) builds a
// .deb that lintian passes without errors; dpkg installs it; the installed
// fleetgate-gateway answers --version, fleetgate-bridge --check-config on
// the installed example names the one file an operator must add (and
// passes once it is there), systemd-analyze verify accepts the installed
// units; the example configurations are conffiles, no secret is shipped;
// dpkg --purge removes it all.
func TestPackage(t *testing.T) {
	testenv.RequireRoot(t)
	for _, b := range []string{"dpkg", "dpkg-deb", "lintian", "systemd-analyze"} {
		testenv.RequireBinary(t, b)
	}
	hostPackageLock(t)
	if out, err := run(t, "dpkg-query", "-W", "-f=${Status}", "fleetgate"); err == nil && strings.Contains(out, "installed") {
		t.Fatalf("a fleetgate package is already installed on this host (%s): the test installs and purges its own; remove it first", out)
	}
	start := time.Now()
	dist := t.TempDir()
	cmd := exec.Command("bash", "deploy/dist.sh")
	cmd.Dir = "../.."
	// TESTBUILD: the binaries are built with `go build ./...`'s flags, so
	// only the link runs (a CGO_ENABLED=0 -trimpath release build compiles
	// the whole tree again: ~50 s of CPU, minutes at CI load); everything
	// else is what `make dist` does.
	cmd.Env = append(os.Environ(), "DIST="+dist, "TARGETS=linux/amd64", "TESTBUILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make dist (amd64): %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "fleetgate_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("dist: want one fleetgate_*_amd64.deb, got %v", debs)
	}
	deb := debs[0]
	built := time.Since(start)

	// Lintian: no error (warnings, e.g. no-manual-page, are logged).
	lintStart := time.Now()
	out, _ := run(t, "lintian", "--tag-display-limit", "0", deb)
	lint := time.Since(lintStart)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian: %s", l)
		}
	}
	t.Logf("lintian:\n%s", out)

	// No secrets: no secrets/ directory, no key, no PSK in the package.
	list := must(t, "dpkg-deb", "-c", deb)
	for _, bad := range []string{"/secrets", ".key", ".psk", ".ppp", "/pki/"} {
		if strings.Contains(list, bad) {
			t.Errorf("package ships %q:\n%s", bad, list)
		}
	}
	x := t.TempDir()
	must(t, "dpkg-deb", "-x", deb, x)
	_ = filepath.WalkDir(x, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("PRIVATE KEY-----")) {
				t.Errorf("package file %s holds a private key", p)
			}
		}
		return nil
	})

	t.Cleanup(func() {
		_ = os.Remove("/etc/fleetgate/central-ca.pem")
		if out, err := run(t, "dpkg", "--purge", "fleetgate"); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		for _, p := range []string{"/usr/bin/fleetgate-gateway", "/lib/systemd/system/fleetgate-gateway.service", "/etc/fleetgate"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("after purge %s is still there (%v)", p, err)
			}
		}
	})
	must(t, "dpkg", "-i", deb)
	if out := must(t, "dpkg-query", "-W", "-f=${Conffiles}", "fleetgate"); !strings.Contains(out, "/etc/fleetgate/gateway.yaml") || !strings.Contains(out, "/etc/fleetgate/bridge.yaml") {
		t.Errorf("conffiles: %q, want both example configurations", out)
	}
	if out := must(t, "/usr/bin/fleetgate-gateway", "--version"); !strings.HasPrefix(out, "gateway fleetgate ") {
		t.Errorf("fleetgate-gateway --version: %q", out)
	}
	if _, err := run(t, "getent", "passwd", "fleetgate"); err != nil {
		t.Errorf("postinst did not create the fleetgate user (sysusers)")
	}
	// The installed example is valid; the one file it names that an
	// operator brings (the central broker's CA) is reported, and nothing
	// else; with it in place the check passes.
	out, err := run(t, "/usr/bin/fleetgate-bridge", "--check-config", "/etc/fleetgate/bridge.yaml")
	if err == nil || !regexp.MustCompile(`^bridge: /etc/fleetgate/bridge.yaml:\d+: mqtt.central_ca: /etc/fleetgate/central-ca.pem: missing`).MatchString(out) || strings.Count(out, "\n") != 1 {
		t.Errorf("bridge --check-config on the installed example: %v\n%s\nwant exactly the missing mqtt.central_ca", err, out)
	}
	pki := t.TempDir()
	must(t, "/usr/bin/fleetgate-gateway", "pki", "init", "--dir", pki)
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/fleetgate/central-ca.pem", ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := must(t, "/usr/bin/fleetgate-bridge", "--check-config", "/etc/fleetgate/bridge.yaml"); !strings.Contains(out, "/etc/fleetgate/bridge.yaml: ok") {
		t.Errorf("bridge --check-config with the CA in place: %q", out)
	}
	// The installed units, as systemd loads them (ExecStart on /usr/bin).
	units := []string{"/lib/systemd/system/fleetgate-gateway.service", "/lib/systemd/system/fleetgate-bridge.service"}
	out, err = run(t, "systemd-analyze", append([]string{"verify"}, units...)...)
	var ours []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "fleetgate-") {
			ours = append(ours, l)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(ours, "\n"))
	}
	t.Logf("package %s (%d bytes) built in %v, lintian %v, whole test %v", filepath.Base(deb), fileSize(deb), built.Round(time.Second), lint.Round(time.Second), time.Since(start).Round(time.Second))
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
