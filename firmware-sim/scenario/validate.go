package scenario

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits on a scenario, to catch typos before they open 10⁶ sockets.
const (
	// MaxDevices bounds the fleet size.
	MaxDevices = 100000
	// MinInterval bounds how fast one device may send.
	MinInterval = 10 * time.Millisecond
)

// Defaults applied by Parse.
const (
	DefaultCoAPPath     = "/telemetry"
	DefaultMQTTTopic    = "telemetry/senml"
	DefaultMQTTCommands = "cmd/#"
	DefaultReplyPrefix  = "status/"
	DefaultPrefix       = "sensor"
	DefaultInterval     = 5 * time.Second
	DefaultReportEvery  = time.Second
	// DefaultBackoffMin and DefaultBackoffMax are Zephyr's LwM2M
	// registration client's schedule (subsys/net/lib/lwm2m/lwm2m_rd_client.c,
	// state ENGINE_NETWORK_ERROR: retry_delay = 1 << retries seconds,
	// retries up to CONFIG_LWM2M_RD_CLIENT_MAX_RETRIES, default 5: 1, 2,
	// 4 … 32 s). ESP-IDF's esp-mqtt retries at a fixed 10 s
	// (MQTT_RECON_DEFAULT_MS in lib/include/mqtt_config.h), inside that
	// range. Neither adds jitter; firmware-sim draws each delay in [d/2, d]
	// so a simulated fleet does not retry in lockstep (real ones are spread
	// by their boot and wake times).
	DefaultBackoffMin   = time.Second
	DefaultBackoffMax   = 32 * time.Second
	DefaultCredSeed     = "fleetgate-sim"
	defaultGroupNameFmt = "group-%d"
)

func (s *Scenario) validate(root *yaml.Node) error {
	bad := func(msg string, path ...string) error {
		return fmt.Errorf("%w: line %d: %s", ErrInvalid, lineOf(root, path...), msg)
	}
	if s.Duration < 0 {
		return bad("duration must not be negative", "duration")
	}
	if s.Target.CoAPPath == "" {
		s.Target.CoAPPath = DefaultCoAPPath
	}
	if !oneOf(&s.Target.CoAPMethod, "post", "put") {
		return bad(fmt.Sprintf("target.coap_method must be post or put, got %q", s.Target.CoAPMethod), "target", "coap_method")
	}
	if s.Target.MQTTTopic == "" {
		s.Target.MQTTTopic = DefaultMQTTTopic
	}
	switch c := s.Target.MQTTCommands; {
	case c == "":
		s.Target.MQTTCommands = DefaultMQTTCommands
	case c == "off":
	case !validFilter(c):
		return bad(fmt.Sprintf("target.mqtt_commands %q is not an MQTT topic filter ('#' only as the last level, '+' alone in a level)", c), "target", "mqtt_commands")
	}
	if s.Target.MQTTReplyPrefix == "" {
		s.Target.MQTTReplyPrefix = DefaultReplyPrefix
	}
	if strings.ContainsAny(s.Target.MQTTReplyPrefix, "+#") || strings.HasPrefix(s.Target.MQTTReplyPrefix, "$") {
		return bad("target.mqtt_reply_prefix must not contain wildcards or start with $", "target", "mqtt_reply_prefix")
	}
	if s.Report.Interval == 0 {
		s.Report.Interval = DefaultReportEvery
	}
	if s.Report.Interval < 0 {
		return bad("report.interval must be positive", "report", "interval")
	}
	if s.Credentials.Seed == "" {
		s.Credentials.Seed = DefaultCredSeed
	}
	if len(s.Groups) == 0 {
		return bad("at least one group is needed", "groups")
	}
	total := 0
	needCoAP, needMQTT := false, false
	for i := range s.Groups {
		g := &s.Groups[i]
		idx := strconv.Itoa(i)
		if g.Name == "" {
			g.Name = fmt.Sprintf(defaultGroupNameFmt, i+1)
		}
		if g.Count <= 0 {
			return bad(fmt.Sprintf("groups[%d].count must be > 0, got %d", i, g.Count), "groups", idx, "count")
		}
		total += g.Count
		if total > MaxDevices {
			return bad(fmt.Sprintf("fleet larger than %d devices", MaxDevices), "groups", idx, "count")
		}
		if g.Prefix == "" {
			g.Prefix = DefaultPrefix
		}
		switch g.Protocol {
		case "coap":
			needCoAP = true
		case "mqtt":
			needMQTT = true
		default:
			return bad(fmt.Sprintf("groups[%d].protocol must be coap or mqtt, got %q", i, g.Protocol), "groups", idx, "protocol")
		}
		if !oneOf(&g.Auth, "psk", "cert") {
			return bad(fmt.Sprintf("groups[%d].auth must be psk or cert, got %q", i, g.Auth), "groups", idx, "auth")
		}
		if !oneOf(&g.Suite, "ccm8", "gcm") {
			return bad(fmt.Sprintf("groups[%d].suite must be ccm8 or gcm, got %q", i, g.Suite), "groups", idx, "suite")
		}
		if g.Protocol == "mqtt" && g.CID {
			return bad(fmt.Sprintf("groups[%d].cid applies to coap (DTLS) only", i), "groups", idx, "cid")
		}
		if g.Protocol == "mqtt" && g.ZeroToken {
			return bad(fmt.Sprintf("groups[%d].zero_token applies to coap only", i), "groups", idx, "zero_token")
		}
		if !oneOf(&g.Format, "json", "cbor") {
			return bad(fmt.Sprintf("groups[%d].format must be json or cbor, got %q", i, g.Format), "groups", idx, "format")
		}
		if g.Interval == 0 {
			g.Interval = DefaultInterval
		}
		if g.Interval < MinInterval {
			return bad(fmt.Sprintf("groups[%d].interval must be at least %v", i, MinInterval), "groups", idx, "interval")
		}
		if g.Sleep != nil && (g.Sleep.Awake <= 0 || g.Sleep.Awake >= g.Interval) {
			return bad(fmt.Sprintf("groups[%d].sleep.awake must be > 0 and < interval", i), "groups", idx, "sleep", "awake")
		}
		if g.Faults.LossPercent < 0 || g.Faults.LossPercent >= 100 {
			return bad(fmt.Sprintf("groups[%d].faults.loss_percent must be in [0,100)", i), "groups", idx, "faults", "loss_percent")
		}
		if g.Faults.LossPercent > 0 && g.Protocol == "mqtt" {
			return bad(fmt.Sprintf("groups[%d].faults.loss_percent applies to coap (UDP) only", i), "groups", idx, "faults", "loss_percent")
		}
		if g.Faults.RebindEvery < 0 {
			return bad(fmt.Sprintf("groups[%d].faults.rebind_every must not be negative", i), "groups", idx, "faults", "rebind_every")
		}
		if g.Reconnect.Min == 0 {
			g.Reconnect.Min = DefaultBackoffMin
		}
		if g.Reconnect.Max == 0 {
			g.Reconnect.Max = DefaultBackoffMax
		}
		if g.Reconnect.Min < 0 || g.Reconnect.Max < g.Reconnect.Min {
			return bad(fmt.Sprintf("groups[%d].reconnect needs 0 < min <= max", i), "groups", idx, "reconnect")
		}
	}
	if needCoAP {
		if err := checkAddr(s.Target.CoAP); err != nil {
			return bad("target.coap: "+err.Error(), "target", "coap")
		}
	}
	if needMQTT {
		if err := checkAddr(s.Target.MQTT); err != nil {
			return bad("target.mqtt: "+err.Error(), "target", "mqtt")
		}
	}
	return nil
}

func checkAddr(a string) error {
	if a == "" {
		return fmt.Errorf("address needed (host:port)")
	}
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// validFilter checks an MQTT 3.1.1 topic filter (§4.7.1): '#' only as the
// whole last level, '+' only as a whole level, no empty filter.
func validFilter(f string) bool {
	if f == "" {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return false
		case strings.Contains(l, "+") && l != "+":
			return false
		}
	}
	return true
}

// oneOf sets an empty *v to allowed[0], the default, and reports whether
// *v is one of allowed.
func oneOf(v *string, allowed ...string) bool {
	if *v == "" {
		*v = allowed[0]
	}
	return slices.Contains(allowed, *v)
}
