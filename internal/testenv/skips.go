package testenv

import (
	"os"
	"testing"
)

// The only ways a test skips. Each says why in the SKIP line; Require
// fails instead in CI (FLEETGATE_REQUIRE_ROOT_TESTS=1), the others name a
// choice made on the command line or by the parent test, never the
// machine. internal/archtest's TestNoBareSkips fails on a t.Skip anywhere
// else.

// Require skips the test (or fails it, when required) unless ok: a
// property of the machine the test needs (an IPv6 loopback, a kernel
// layout), stated by what.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		skipOrFail(t, format, args...)
	}
}

// SkipIfShort skips a long test under -short (go test -short chooses it).
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("SKIP (loud, -short): %s: %s", t.Name(), why)
	}
}

// SkipUnderRace skips a test whose measurement means nothing under the
// race detector (allocation counts: sync.Pool drops items at random); the
// same test runs in the non-race run, which CI also does.
func SkipUnderRace(t testing.TB, why string) {
	t.Helper()
	if RaceEnabled {
		t.Skipf("SKIP (loud, -race): %s: %s", t.Name(), why)
	}
}

// OptIn skips a test that runs only when asked for (a flag such as
// -soak.duration): how says how to ask.
func OptIn(t testing.TB, enabled bool, how string) {
	t.Helper()
	if !enabled {
		t.Skipf("SKIP (loud, opt-in): %s runs with %s", t.Name(), how)
	}
}

// ChildProcess returns the value of env for a test that is only the child
// half of another test (re-executed by its parent with env set), and
// skips it when run on its own. parent names the test that runs it.
func ChildProcess(t testing.TB, env, parent string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		t.Skipf("SKIP (child process): %s runs only as the child of %s", t.Name(), parent)
	}
	return v
}
