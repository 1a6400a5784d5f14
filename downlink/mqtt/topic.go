package mqtt

import (
	"strings"
	"unicode/utf8"
)

// Topic rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7). These are pure functions over
// strings; FuzzTopicACL checks them against a brute-force matcher.

// validTopicName reports whether t is a topic name a device may publish to:
// non-empty, valid UTF-8 without U+0000, no wildcard characters, not a "$"
// system topic, at most 65535 bytes.
func validTopicName(t string) bool {
	if t == "" || len(t) > 65535 || !utf8.ValidString(t) || strings.ContainsAny(t, "+#\x00") || t[0] == '$' {
		return false
	}
	return true
}

// validFilter reports whether f is a well-formed subscription filter ("+"
// alone in a level, "#" alone in the last level), not a "$" filter.
func validFilter(f string) bool {
	if f == "" || len(f) > 65535 || !utf8.ValidString(f) || strings.ContainsRune(f, 0) || f[0] == '$' {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) != 1 {
			return false
		}
		if l == "#" && i != len(levels)-1 {
			return false
		}
	}
	return true
}

// matchFilter reports whether topic name t matches filter f (f valid).
func matchFilter(f, t string) bool {
	fl := strings.Split(f, "/")
	tl := strings.Split(t, "/")
	for i, l := range fl {
		if l == "#" {
			return true // also matches the parent level (§4.7.1.2)
		}
		if i >= len(tl) {
			return false
		}
		if l != "+" && l != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}

// filterWithin reports whether every topic matched by filter f is also
// matched by filter a (both valid), i.e. subscribing to f cannot reach
// outside a.
func filterWithin(f, a string) bool {
	fl := strings.Split(f, "/")
	al := strings.Split(a, "/")
	for i, l := range fl {
		if i >= len(al) {
			return false
		}
		switch al[i] {
		case "#":
			return true
		case "+":
			if l == "#" {
				return false
			}
		default:
			if l != al[i] {
				return false
			}
		}
	}
	// f is exhausted: a may only continue with a final "#" (which matches
	// the parent level too).
	return len(al) == len(fl) || (len(al) == len(fl)+1 && al[len(fl)] == "#")
}

// ACL is an endpoint's topic mapping on the device side.
type ACL struct {
	// Publish lists the filters a device may publish under.
	Publish []string
	// Subscribe lists the filters a device may subscribe within.
	Subscribe []string
}

// CanPublish reports whether a device may publish to topic t.
func (a ACL) CanPublish(t string) bool {
	if !validTopicName(t) {
		return false
	}
	for _, f := range a.Publish {
		if matchFilter(f, t) {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether a device may subscribe to filter f.
func (a ACL) CanSubscribe(f string) bool {
	if !validFilter(f) {
		return false
	}
	for _, s := range a.Subscribe {
		if filterWithin(f, s) {
			return true
		}
	}
	return false
}

// CanReceive reports whether topic name t may be delivered to a device.
func (a ACL) CanReceive(t string) bool {
	if !validTopicName(t) {
		return false
	}
	for _, s := range a.Subscribe {
		if matchFilter(s, t) {
			return true
		}
	}
	return false
}

// mount returns the broker-internal topic of device topic t.
func mount(endpoint, t string) string { return mountPrefix + endpoint + "/" + t }

// unmount strips endpoint's mount prefix from an internal topic; ok is false
// if the topic is not in that endpoint's namespace.
func unmount(endpoint, t string) (string, bool) {
	p := mountPrefix + endpoint + "/"
	if !strings.HasPrefix(t, p) {
		return "", false
	}
	return t[len(p):], true
}
