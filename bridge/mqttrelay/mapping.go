package mqttrelay

import (
	"fmt"
	"strings"
)

// Mapping is the documented, configurable topic mapping between a device's
// topics on the site broker and the central broker:
//
//	device  "telemetry/temp"  ->  central "sites/<site>/<endpoint>/telemetry/temp"
//	central "sites/<site>/<endpoint>/cmd/reboot"  ->  device "cmd/reboot"
//
// Upstream, any topic the site broker let the device publish (its ACL) is
// prefixed. Downstream, the relay subscribes centrally to Prefix + each of
// Commands and strips the prefix again.
type Mapping struct {
	// Prefix is the central prefix; "{site}" and "{endpoint}" are replaced.
	// It must end in "/" (DefaultPrefix if empty).
	Prefix string
	// Commands are device-side filters subscribed centrally (default
	// "cmd/#"); they should equal the site broker's subscribe ACL.
	Commands []string
}

func (m Mapping) withDefaults() Mapping {
	if m.Prefix == "" {
		m.Prefix = DefaultPrefix
	}
	if m.Commands == nil {
		m.Commands = []string{"cmd/#"}
	}
	return m
}

func (m Mapping) validate() error {
	if !strings.HasSuffix(m.Prefix, "/") || strings.ContainsAny(strings.NewReplacer("{site}", "", "{endpoint}", "").Replace(m.Prefix), "+#{}") {
		return fmt.Errorf("%w: mapping prefix %q", ErrConfig, m.Prefix)
	}
	// Endpoint names are unique per site only: without both the topics of
	// sensor-17 at two sites would be the same, and so would the
	// commands each receives.
	if !strings.Contains(m.Prefix, "{site}") || !strings.Contains(m.Prefix, "{endpoint}") {
		return fmt.Errorf("%w: mapping prefix %q must contain {site} and {endpoint} (topics must be unique across the fleet)", ErrConfig, m.Prefix)
	}
	for _, c := range m.Commands {
		if c == "" || strings.HasPrefix(c, "$") || strings.HasPrefix(c, "/") {
			return fmt.Errorf("%w: command filter %q", ErrConfig, c)
		}
	}
	return nil
}

// ClientID is an endpoint's client identifier at the central broker,
// "<site>/<endpoint>": endpoint names are unique per site only, and two
// sites' sessions with one client ID would take each other over (and each
// other's queued commands).
func ClientID(site, endpoint string) string { return site + "/" + endpoint }

// prefix returns the central prefix for one endpoint.
func (m Mapping) prefix(site, endpoint string) string {
	return strings.NewReplacer("{site}", site, "{endpoint}", endpoint).Replace(m.Prefix)
}

// Up maps a device topic to its central topic.
func (m Mapping) Up(site, endpoint, topic string) string {
	return m.prefix(site, endpoint) + topic
}

// Down maps a central topic back to the device topic; ok is false if the
// topic is not under the endpoint's prefix.
func (m Mapping) Down(site, endpoint, topic string) (string, bool) {
	p := m.prefix(site, endpoint)
	if !strings.HasPrefix(topic, p) || len(topic) == len(p) {
		return "", false
	}
	return topic[len(p):], true
}

// Subscriptions lists the central filters for one endpoint's commands.
func (m Mapping) Subscriptions(site, endpoint string) []string {
	p := m.prefix(site, endpoint)
	out := make([]string, len(m.Commands))
	for i, c := range m.Commands {
		out[i] = p + c
	}
	return out
}
