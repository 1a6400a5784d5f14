// Package scenario reads simulated-fleet scenarios from YAML
// (configs/fleet-*.yaml): fleet size and mix, targets, credentials source,
// rates, sleep patterns, faults and duration. Errors name the file line.
package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Scenario is a parsed, validated fleet description.
type Scenario struct {
	// Name labels the run in reports.
	Name string `yaml:"name"`
	// Duration stops the run by itself; 0 runs until cancelled.
	Duration time.Duration `yaml:"duration"`
	// Seed makes loss injection and jitter reproducible.
	Seed int64 `yaml:"seed"`
	// Target says where devices connect (the bridge, or a test server).
	Target Target `yaml:"target"`
	// Collector optionally names a central collector for true loss.
	Collector Collector `yaml:"collector"`
	// Credentials says where device identities come from.
	Credentials Credentials `yaml:"credentials"`
	// Report sets the live summary refresh.
	Report ReportCfg `yaml:"report"`
	// Groups make up the fleet, in order; devices are numbered across
	// groups from 1 (sensor-1, sensor-2, …).
	Groups []Group `yaml:"groups"`

	// Dir is the directory of the scenario file (relative paths).
	Dir string `yaml:"-"`
}

// Target is the device-facing side of the bridge.
type Target struct {
	// CoAP is the DTLS/CoAP address, host:port (bridge default port 5684).
	CoAP string `yaml:"coap"`
	// CoAPPath is where telemetry is POSTed, default "/telemetry".
	CoAPPath string `yaml:"coap_path"`
	// CoAPMethod is "post" (default) or "put".
	CoAPMethod string `yaml:"coap_method"`
	// MQTT is the MQTT/TLS address, host:port (default port 8883).
	MQTT string `yaml:"mqtt"`
	// MQTTTopic is the telemetry topic; "{device}" is replaced by the
	// device name. Default "telemetry/senml": device-relative, as the
	// bridge's broker mounts each endpoint's topics and allows devices to
	// publish under telemetry/# and status/#.
	MQTTTopic string `yaml:"mqtt_topic"`
	// MQTTCommands is the filter MQTT devices subscribe to for commands
	// from central ("{device}" is replaced). Default "cmd/#":
	// device-relative, the bridge's subscribe ACL, fed by the relay from
	// sites/<site>/<endpoint>/cmd/... centrally. "off" subscribes to
	// nothing.
	MQTTCommands string `yaml:"mqtt_commands"`
	// MQTTReplyPrefix is put in front of a command's topic for the
	// device's reply (default "status/": "cmd/ping" is answered on
	// "status/cmd/ping", which the bridge relays to central).
	MQTTReplyPrefix string `yaml:"mqtt_reply_prefix"`
	// ServerName is the expected TLS/DTLS server name for certificates.
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM trust anchor for the server's certificate.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify disables server certificate checks (demo only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Collector names the central collector whose sequence tracking gives
// true loss: URL of a `firmware-sim collect` status endpoint.
type Collector struct {
	// URL is e.g. http://127.0.0.1:9464/stats.
	URL string `yaml:"url"`
}

// Credentials selects generated identities or a credentials file
// (package creds documents the format).
type Credentials struct {
	// File is a credentials file; names must cover every device.
	File string `yaml:"file"`
	// Seed derives PSKs/passwords deterministically (creds.DerivePSK)
	// when File is empty. Default "fleetgate-sim".
	Seed string `yaml:"seed"`
}

// ReportCfg configures the live summary.
type ReportCfg struct {
	// Interval between summary refreshes, default 1s.
	Interval time.Duration `yaml:"interval"`
	// JSON is a path for the final JSON report ("-" for stdout).
	JSON string `yaml:"json"`
}

// Group is a set of identical devices.
type Group struct {
	// Name labels the group in reports.
	Name string `yaml:"name"`
	// Count is the number of devices.
	Count int `yaml:"count"`
	// Prefix names devices "<prefix>-<n>", default "sensor".
	Prefix string `yaml:"prefix"`
	// Protocol is "coap" (DTLS/CoAP) or "mqtt" (MQTT over TLS).
	Protocol string `yaml:"protocol"`
	// Auth is "psk" or "cert" (ECDSA P-256) for coap; mqtt uses
	// username/password ("psk" here means generated password) or "cert".
	Auth string `yaml:"auth"`
	// Suite is "ccm8" (TLS_*_WITH_AES_128_CCM_8) or "gcm"
	// (TLS_*_WITH_AES_128_GCM_SHA256); coap only.
	Suite string `yaml:"suite"`
	// CID enables DTLS Connection ID (RFC 9146); coap only.
	CID bool `yaml:"cid"`
	// ZeroToken sends CoAP telemetry with a zero-length token (RFC 7252
	// §5.3.1), as many MCU stacks do; coap only.
	ZeroToken bool `yaml:"zero_token"`
	// Format is the SenML representation, "json" or "cbor".
	Format string `yaml:"format"`
	// Interval is the telemetry period.
	Interval time.Duration `yaml:"interval"`
	// Confirmable sends CoAP telemetry as CON (default true); MQTT uses
	// QoS 1 when true, QoS 0 when false.
	Confirmable *bool `yaml:"confirmable"`
	// Sleep makes the device sleepy: after sending it listens for Awake,
	// then its radio is off until the next period.
	Sleep *Sleep `yaml:"sleep"`
	// Faults injects loss and NAT rebinding.
	Faults Faults `yaml:"faults"`
	// Reconnect sets the backoff after errors.
	Reconnect Backoff `yaml:"reconnect"`

	line int
}

// Sleep is a duty cycle.
type Sleep struct {
	// Awake is the listen window after each send.
	Awake time.Duration `yaml:"awake"`
}

// Faults are injected in the simulator's own socket wrapper.
type Faults struct {
	// LossPercent drops datagrams in each direction with this chance
	// (coap only; MQTT runs over TCP).
	LossPercent float64 `yaml:"loss_percent"`
	// RebindEvery moves the device to a new source port this often
	// (NAT rebinding); 0 disables.
	RebindEvery time.Duration `yaml:"rebind_every"`
}

// Backoff is exponential reconnection backoff with equal jitter (each
// delay drawn in [d/2, d]); the defaults are Zephyr's LwM2M client's
// (DefaultBackoffMin/Max).
type Backoff struct {
	// Min is the first delay, default 1s.
	Min time.Duration `yaml:"min"`
	// Max caps the delay, default 32s.
	Max time.Duration `yaml:"max"`
}

// IsConfirmable reports the effective Confirmable setting.
func (g *Group) IsConfirmable() bool { return g.Confirmable == nil || *g.Confirmable }

// Line returns the YAML line the group starts at (0 if built in code).
func (g *Group) Line() int { return g.line }

// Devices returns the total device count.
func (s *Scenario) Devices() int {
	n := 0
	for _, g := range s.Groups {
		n += g.Count
	}
	return n
}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	s, err := Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.Dir = filepath.Dir(path)
	return s, nil
}

// Parse reads and validates a scenario. Unknown keys, type errors and
// invalid values are reported with their line number.
func Parse(r io.Reader) (*Scenario, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(r)
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty scenario", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := checkKnown(&root, []string{}); err != nil {
		return nil, err
	}
	var s Scenario
	if err := root.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// Record where each group starts, for validation messages.
	lines := groupLines(&root)
	for i := range s.Groups {
		if i < len(lines) {
			s.Groups[i].line = lines[i]
		}
	}
	if err := s.validate(&root); err != nil {
		return nil, err
	}
	return &s, nil
}

// lineOf returns the line of key path (e.g. "groups", "1", "count") in
// the document, falling back to the nearest existing parent.
func lineOf(root *yaml.Node, path ...string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line = n.Content[i].Line
					next = n.Content[i+1]
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscan(p, &idx); err == nil && idx >= 0 && idx < len(n.Content) {
				next = n.Content[idx]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func groupLines(root *yaml.Node) []int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "groups" && n.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, g := range n.Content[i+1].Content {
				out = append(out, g.Line)
			}
			return out
		}
	}
	return nil
}

// known lists accepted keys per mapping path ("" is the top level, "groups"
// stands for every group).
var known = map[string][]string{
	"":                 {"name", "duration", "seed", "target", "collector", "credentials", "report", "groups"},
	"target":           {"coap", "coap_path", "coap_method", "mqtt", "mqtt_topic", "server_name", "ca_file", "insecure_skip_verify"},
	"collector":        {"url"},
	"credentials":      {"file", "seed"},
	"report":           {"interval", "json"},
	"groups":           {"name", "count", "prefix", "protocol", "auth", "suite", "cid", "zero_token", "format", "interval", "confirmable", "sleep", "faults", "reconnect"},
	"groups.sleep":     {"awake"},
	"groups.faults":    {"loss_percent", "rebind_every"},
	"groups.reconnect": {"min", "max"},
}

func checkKnown(n *yaml.Node, path []string) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkKnown(c, path); err != nil {
				return err
			}
		}
		return nil
	}
	key := strings.Join(path, ".")
	switch n.Kind {
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if err := checkKnown(c, path); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		allowed, ok := known[key]
		if !ok {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !contains(allowed, k.Value) {
				where := key
				if where == "" {
					where = "top level"
				}
				return fmt.Errorf("%w: line %d: unknown key %q in %s (known: %s)", ErrInvalid, k.Line, k.Value, where, strings.Join(allowed, ", "))
			}
			if err := checkKnown(n.Content[i+1], append(path[:len(path):len(path)], k.Value)); err != nil {
				return err
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
