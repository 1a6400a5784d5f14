// Package testenv decides whether tests that need root, network namespaces
// or real third-party programs can run here, and says loudly why not.
//
// In CI (root) the test command exports FLEETGATE_REQUIRE_ROOT_TESTS=1: a
// test that would skip then fails instead, so nothing is silently skipped.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Required reports whether root-only and real-peer tests must run.
func Required() bool { return os.Getenv("FLEETGATE_REQUIRE_ROOT_TESTS") == "1" }

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("FLEETGATE_REQUIRE_ROOT_TESTS=1 but "+format, args...)
	}
	t.Skipf("SKIP (loud): "+format, args...)
}

// RequireRoot skips the test (or fails it, when required) unless running as
// root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "%s needs root (network namespaces, veth, nftables)", t.Name())
	}
}

// RequireBinary returns the path of a program, skipping the test (or failing
// it, when required) if it is not installed.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		// Debian puts some daemons in sbin or libexec paths.
		for _, dir := range []string{"/usr/sbin/", "/sbin/", "/usr/lib/ipsec/", "/usr/libexec/ipsec/", "/usr/libexec/softether/vpnserver/"} {
			if _, serr := os.Stat(dir + name); serr == nil {
				return dir + name
			}
		}
		skipOrFail(t, "%s needs %q (install with deploy/ci/install-deps.sh)", t.Name(), name)
	}
	return p
}

// ExampleConfig copies the shipped configurations (the configs directory,
// found from the calling test's package directory) into a temporary
// directory, every file owner-only as an installation would have them (git
// stores no modes: a checkout leaves the secrets group/world-readable,
// which the gateway refuses), and returns the path of configs/name there
// (name may be "fleet/fleet.yaml").
func ExampleConfig(t testing.TB, name string) string {
	t.Helper()
	src := ""
	for _, up := range []string{"configs", "../configs", "../../configs", "../../../configs"} {
		if _, err := os.Stat(filepath.Join(up, name)); err == nil {
			src = up
			break
		}
	}
	if src == "" {
		t.Fatalf("configs/%s not found from the package directory", name)
	}
	dir := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}
