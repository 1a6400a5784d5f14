package mqtt

import "testing"

func TestACL(t *testing.T) {
	acl := ACL{Publish: DefaultPublishFilters, Subscribe: DefaultSubscribeFilters}
	pub := []struct {
		topic string
		want  bool
	}{
		{"telemetry/temp", true},
		{"telemetry", true}, // "#" matches the parent level
		{"telemetry/a/b/c", true},
		{"status/online", true},
		{"cmd/reboot", false},
		{"telemetryx/a", false},
		{"$SYS/broker/load", false},
		{"telemetry/+", false},
		{"telemetry/#", false},
		{"", false},
		{"ep/other/telemetry/x", false},
		{"../telemetry", false},
		{"telemetry/\x00", false},
		{"telemetry/\xff", false},
	}
	for _, tt := range pub {
		if got := acl.CanPublish(tt.topic); got != tt.want {
			t.Errorf("CanPublish(%q): got %v, want %v", tt.topic, got, tt.want)
		}
	}
	sub := []struct {
		filter string
		want   bool
	}{
		{"cmd/#", true},
		{"cmd", true},
		{"cmd/+", true},
		{"cmd/+/x", true},
		{"cmd/reboot", true},
		{"#", false},
		{"+/reboot", false},
		{"+", false},
		{"$SYS/#", false},
		{"$share/g/cmd/#", false},
		{"telemetry/#", false},
		{"cmd/#/x", false},
		{"cmd/a+", false},
		{"", false},
	}
	for _, tt := range sub {
		if got := acl.CanSubscribe(tt.filter); got != tt.want {
			t.Errorf("CanSubscribe(%q): got %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestFilterWithin(t *testing.T) {
	tests := []struct {
		f, a string
		want bool
	}{
		{"a/b", "a/+", true},
		{"a/+", "a/b", false},
		{"a/#", "a/+", false},
		{"a/+", "a/#", true},
		{"a", "a/#", true},
		{"a/b/c", "a/+", false},
		{"a/+/c", "a/+/+", true},
		{"#", "#", true},
		{"a/b", "a/b", true},
	}
	for _, tt := range tests {
		if got := filterWithin(tt.f, tt.a); got != tt.want {
			t.Errorf("filterWithin(%q, %q): got %v, want %v", tt.f, tt.a, got, tt.want)
		}
	}
}

func TestMount(t *testing.T) {
	in := mount("sensor-1", "cmd/x")
	if in != "ep/sensor-1/cmd/x" {
		t.Fatalf("mount: got %q", in)
	}
	if got, ok := unmount("sensor-1", in); !ok || got != "cmd/x" {
		t.Fatalf("unmount: got %q %v", got, ok)
	}
	if _, ok := unmount("sensor-11", in); ok {
		t.Fatal("unmount accepted another endpoint's topic")
	}
	if _, ok := unmount("sensor", "ep/sensor-1/cmd/x"); ok {
		t.Fatal("unmount accepted a prefix-sharing endpoint")
	}
}
