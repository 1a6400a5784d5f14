package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConvention holds the issue-22 traps: --help exits 0 everywhere,
// `endpoint add --help` provisions nothing, unknown flags and missing
// arguments are usage errors (2), -c before or after the verb, and
// completion.
func TestConvention(t *testing.T) {
	cfg := writeConfig(t, "")
	state := filepath.Join(filepath.Dir(cfg), "state")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage:"},
		{[]string{"-h"}, 0, "Usage:"},
		{[]string{"endpoint", "add", "--help"}, 0, "Provision an endpoint"},
		{[]string{"-c", cfg, "endpoint", "add", "--help"}, 0, "--protocol"},
		{[]string{"endpoint", "--help"}, 0, "revoke"},
		{[]string{"--version"}, 0, "bridge fleetgate"},
		{[]string{"version"}, 0, "bridge fleetgate"},
		{[]string{"-c", cfg, "endpoint", "add"}, 2, "missing NAME"},
		{[]string{"-c", cfg, "endpoint", "add", "a", "b"}, 2, `unexpected argument "b"`},
		{[]string{"-c", cfg, "endpoint", "add", "--bogus", "x"}, 2, "unknown flag: --bogus"},
		{[]string{"-c", cfg, "endpoint", "lst"}, 2, `did you mean "list"?`},
		{[]string{"-c", cfg, "endpoints", "--json", "extra"}, 2, `unknown command "extra"`},
		{[]string{"completion", "bash"}, 0, "bash completion"},
	}
	for _, tt := range tests {
		code, out, errs := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errs, tt.want) {
			t.Errorf("%v: got %d stdout %q stderr %q; want %d containing %q", tt.args, code, out, errs, tt.code, tt.want)
		}
	}
	// Nothing above may have provisioned "--help" or created the state.
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state dir %s exists after help/usage errors (err %v)", state, err)
	}
	// Read-only verbs create nothing: no state directory, no CA key.
	for _, args := range [][]string{{"endpoint", "list"}, {"endpoints"}, {"uplink"}, {"status"}, {"--check-config"}} {
		runCLI(t, append([]string{"-c", cfg}, args...)...)
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Fatalf("%v created %s (err %v)", args, state, err)
		}
	}
	// -c after the verb works as before it.
	if code, _, errs := runCLI(t, "endpoint", "add", "sensor-5", "-c", cfg); code != 0 {
		t.Fatalf("endpoint add NAME -c FILE: got %d %q", code, errs)
	}
	code, out, _ := runCLI(t, "endpoint", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "sensor-5") || strings.Contains(out, "--help") {
		t.Fatalf("list: got %d %q, want sensor-5 and no endpoint named --help", code, out)
	}
}
