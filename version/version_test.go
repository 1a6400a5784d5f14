package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func TestResolve(t *testing.T) {
	stamp := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-11-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}, true
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tail := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	for _, tt := range []struct {
		name, v, commit, date string
		read                  func() (*debug.BuildInfo, bool)
		want                  string
	}{
		{"ldflags win", "v1.2.0-3-gabc", "fedcba9876543210", "2026-11-23T21:40:00Z", stamp,
			"fleetgate v1.2.0-3-gabc (commit fedcba987654, 2026-11-23T21:40:00Z, " + tail},
		{"vcs stamp fills in", "dev", "", "", stamp,
			"fleetgate dev (commit 0123456789ab+dirty, 2026-11-01T10:00:00Z, " + tail},
		{"nothing known", "dev", "", "", none,
			"fleetgate dev (commit unknown, unknown date, " + tail},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolve(tt.v, tt.commit, tt.date, tt.read).String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLdflags links a tiny program with -X, as deploy/dist.sh does, and
// checks the binary reports the injected values.
func TestLdflags(t *testing.T) {
	testenv.SkipIfShort(t, "builds a binary")
	dir := t.TempDir()
	main := "package main\n\nimport (\n\t\"fmt\"\n\n\t\"github.com/fleetgate/fleetgate/version\"\n)\n\nfunc main() { fmt.Print(version.String()) }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "v")
	pkg := "github.com/fleetgate/fleetgate/version"
	ld := "-X " + pkg + ".Version=v9.9.9-test -X " + pkg + ".Commit=abcdefabcdefabcdef -X " + pkg + ".Date=2026-11-23T00:00:00Z"
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ld, "-o", bin, filepath.Join(dir, "main.go"))
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "fleetgate v9.9.9-test (commit abcdefabcdef, 2026-11-23T00:00:00Z, "
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("binary prints %q, want prefix %q", out, want)
	}
}
