package mqtt

import (
	"strings"
	"testing"
)

// FuzzTopicACL checks the filter logic against brute force: if filter f is
// judged within allowed filter a, every sample topic f matches must be
// matched by a; CanPublish/CanSubscribe never panic.
func FuzzTopicACL(f *testing.F) {
	f.Add("cmd/#", "cmd/+/x", "cmd/a/x")
	f.Add("telemetry/#", "telemetry", "telemetry")
	f.Add("+/+", "a/#", "a/b/c")
	f.Add("#", "$SYS/#", "$SYS/x")
	f.Fuzz(func(t *testing.T, a, fl, topic string) {
		acl := ACL{Publish: []string{a}, Subscribe: []string{a}}
		_ = acl.CanPublish(topic)
		_ = acl.CanSubscribe(fl)
		if !validFilter(a) || !validFilter(fl) || !validTopicName(topic) {
			return
		}
		if filterWithin(fl, a) && matchFilter(fl, topic) && !matchFilter(a, topic) {
			t.Fatalf("filter %q judged within %q, but topic %q matches only the first", fl, a, topic)
		}
		// A topic built from the filter by filling wildcards must match it.
		filled := strings.ReplaceAll(strings.ReplaceAll(fl, "+", "x"), "#", "y/z")
		if !matchFilter(fl, filled) {
			t.Fatalf("filter %q does not match its own instance %q", fl, filled)
		}
	})
}
