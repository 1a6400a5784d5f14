package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "usage"},
		{[]string{"fly"}, 2, "unknown command"},
		{[]string{"run", "--bogus"}, 2, "bogus"},
		{[]string{"collect"}, 2, "at least one"},
		{[]string{"run", "-c", "/nonexistent.yaml"}, 1, "no such file"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if got := Main(tt.args, &out, &errb); got != tt.code || !strings.Contains(errb.String(), tt.msg) {
			t.Errorf("%v: got exit %d %q, want %d containing %q", tt.args, got, errb.String(), tt.code, tt.msg)
		}
	}
}

func TestCredsCommandWritesLoadableFile(t *testing.T) {
	dir := t.TempDir()
	sc := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(sc, []byte(`target: {coap: "127.0.0.1:5684", mqtt: "127.0.0.1:8883"}
groups:
  - {count: 2, protocol: coap}
  - {count: 1, protocol: coap, auth: cert}
  - {count: 1, protocol: mqtt}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "creds")
	var so, se bytes.Buffer
	if code := Main([]string{"creds", "-c", sc, "-o", out, "--cert-dir", filepath.Join(dir, "certs")}, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode: %v %v, want 0600", fi.Mode(), err)
	}
	set, err := creds.LoadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]creds.Kind{"sensor-1": creds.KindPSK, "sensor-2": creds.KindPSK, "sensor-3": creds.KindCert, "sensor-4": creds.KindMQTT}
	for n, k := range want {
		e, err := set.Get(n)
		if err != nil || e.Kind != k {
			t.Errorf("%s: got %+v %v, want kind %s", n, e, err, k)
		}
	}
	if e, _ := set.Get("sensor-3"); e.Cert == nil {
		t.Error("sensor-3 certificate not loadable")
	}
	if _, err := os.Stat(filepath.Join(dir, "certs", "ca.pem")); err != nil {
		t.Errorf("CA not written: %v", err)
	}
}

// TestConvention: the traps for firmware-sim (`--version` was an
// unknown command): help and version exit 0, completion, unknown flags
// and extra arguments are usage errors (2).
func TestConvention(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, "firmware-sim fleetgate"},
		{[]string{"version"}, 0, "firmware-sim fleetgate"},
		{[]string{"--help"}, 0, "Usage:"},
		{[]string{"run", "-h"}, 0, "--duration"},
		{[]string{"creds", "--help"}, 0, "--cert-dir"},
		{[]string{"completion", "bash"}, 0, "bash completion"},
		{[]string{"run", "extra.yaml"}, 2, `unknown command "extra.yaml"`},
		{[]string{"collect", "--bogus"}, 2, "unknown flag: --bogus"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if got := Main(tt.args, &out, &errb); got != tt.code || !strings.Contains(out.String()+errb.String(), tt.want) {
			t.Errorf("%v: got exit %d stdout %q stderr %q, want %d containing %q", tt.args, got, out.String(), errb.String(), tt.code, tt.want)
		}
	}
}
