package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConvention holds the issue-22 CLI traps for the gateway: --help and
// --version exit 0 everywhere, unknown flags and missing arguments are
// usage errors (2) and never a name, read-only verbs create nothing, and
// `completion bash` prints a script.
func TestConvention(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // read-only verbs must not create ./pki here
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage:"},
		{[]string{"pki", "issue", "--help"}, 0, "DIR/certs/NAME.crt"},
		{[]string{"sessions", "terminate", "--help"}, 0, "IDENTITY"},
		{[]string{"--version"}, 0, "gateway fleetgate"},
		{[]string{"pki", "--version"}, 2, "unknown flag: --version"},
		{[]string{"version"}, 0, "gateway fleetgate"},
		{[]string{"pki", "issue"}, 2, "missing NAME"},
		{[]string{"pki"}, 2, "missing command (crl, init, issue"},
		{[]string{"pki", "isue", "x"}, 2, `did you mean "issue"?`},
		{[]string{"client-config", "--format", "windows"}, 2, "missing IDENTITY"},
		{[]string{"client-config", "x", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"sesions"}, 2, `did you mean "sessions"?`},
		{[]string{"completion", "bash"}, 0, "bash completion"},
		{[]string{"pki", "list"}, 1, "no CA"},
		{[]string{"pki", "list", "--dir", filepath.Join(dir, "nope")}, 1, "no CA"},
		{[]string{"-c", filepath.Join(dir, "missing.yaml"), "status"}, 1, "missing.yaml"},
	}
	for _, tt := range tests {
		code, out, errs := run(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errs, tt.want) {
			t.Errorf("%v: got %d stdout %q stderr %q; want %d containing %q", tt.args, code, out, errs, tt.code, tt.want)
		}
	}
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Fatalf("read-only verbs and usage errors left %v in the working directory (%v)", left, err)
	}
}
