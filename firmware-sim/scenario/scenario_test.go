package scenario

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const good = `name: t
duration: 10s
target:
  coap: 127.0.0.1:5684
  mqtt: 127.0.0.1:8883
groups:
  - name: a
    count: 3
    protocol: coap
    suite: gcm
    cid: true
    format: cbor
    interval: 1s
    sleep: {awake: 200ms}
    faults: {loss_percent: 5, rebind_every: 3s}
  - count: 2
    protocol: mqtt
    confirmable: false
`

func TestParseGood(t *testing.T) {
	s, err := Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Devices(); got != 5 {
		t.Errorf("devices: got %d, want 5", got)
	}
	g := s.Groups[0]
	if g.Suite != "gcm" || !g.CID || g.Format != "cbor" || g.Sleep.Awake != 200*time.Millisecond || g.Faults.LossPercent != 5 {
		t.Errorf("group 0: got %+v", g)
	}
	if g.Line() != 7 {
		t.Errorf("group 0 line: got %d, want 7", g.Line())
	}
	h := s.Groups[1]
	if h.Name != "group-2" || h.Auth != "psk" || h.Format != "json" || h.Interval != DefaultInterval || h.IsConfirmable() {
		t.Errorf("group 1 defaults: got %+v", h)
	}
	if s.Target.CoAPPath != DefaultCoAPPath || s.Report.Interval != time.Second || s.Target.MQTTCommands != "cmd/#" || s.Target.MQTTReplyPrefix != "status/" {
		t.Errorf("defaults: got %+v %+v", s.Target, s.Report)
	}
}

func TestParseErrorsCarryLines(t *testing.T) {
	tests := []struct {
		name, edit, with string
		line             string
	}{
		{"unknown top key", "name: t", "nam: t", "line 1:"},
		{"unknown group key", "    suite: gcm", "    suit: gcm", "line 10:"},
		{"unknown nested key", "    sleep: {awake: 200ms}", "    sleep: {wake: 200ms}", "line 14:"},
		{"bad count", "    count: 3", "    count: 0", "line 8:"},
		{"bad protocol", "    protocol: mqtt", "    protocol: http", "line 17:"},
		{"bad duration type", "duration: 10s", "duration: soon", "line 2:"},
		{"loss out of range", "loss_percent: 5", "loss_percent: 100", "line 15:"},
		{"awake above interval", "awake: 200ms", "awake: 2s", "line 14:"},
		{"cid on mqtt", "    confirmable: false", "    cid: true", "line 18:"},
		{"bad target", "  coap: 127.0.0.1:5684", "  coap: nowhere", "line 4:"},
		{"bad suite", "suite: gcm", "suite: cbc", "line 10:"},
		{"bad command filter", "  coap: 127.0.0.1:5684", "  coap: 127.0.0.1:5684\n  mqtt_commands: cmd/#/x", "line 5:"},
		{"wildcard reply prefix", "  coap: 127.0.0.1:5684", "  coap: 127.0.0.1:5684\n  mqtt_reply_prefix: st+/", "line 5:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(good, tt.edit, tt.with, 1)
			if in == good {
				t.Fatalf("edit %q not applied", tt.edit)
			}
			_, err := Parse(strings.NewReader(in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.line) {
				t.Errorf("got %v, want ErrInvalid at %s", err, tt.line)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	if _, err := Parse(strings.NewReader("")); !errors.Is(err, ErrInvalid) {
		t.Errorf("got %v, want ErrInvalid", err)
	}
	if _, err := Parse(strings.NewReader("name: x\n")); err == nil || !strings.Contains(err.Error(), "group") {
		t.Errorf("got %v, want a missing-groups error", err)
	}
}

// TestShippedConfigs loads every configs/fleet-*.yaml.
func TestShippedConfigs(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	files, err := filepath.Glob(filepath.Join(filepath.Dir(file), "..", "..", "configs", "fleet-*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("got %d fleet configs, want at least 2", len(files))
	}
	for _, f := range files {
		s, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if strings.HasSuffix(f, "fleet-demo.yaml") && s.Devices() != 50 {
			t.Errorf("%s: got %d devices, want 50", f, s.Devices())
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("groups: [{count: 1, protocol: coap}]\ntarget: {coap: 'a:1'}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(strings.NewReader(string(b)))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		if s.Devices() <= 0 || s.Devices() > MaxDevices {
			t.Fatalf("accepted fleet of %d devices", s.Devices())
		}
	})
}
