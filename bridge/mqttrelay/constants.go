package mqttrelay

import "time"

// Defaults for Config fields left zero.
const (
	// DefaultPrefix is the central topic prefix of one endpoint.
	DefaultPrefix = "sites/{site}/{endpoint}/"
	// DefaultWindow is how many QoS 1/2 messages one endpoint may have in
	// flight to the central broker. They are sent in order on one TCP
	// connection, so order is kept. It must not exceed the broker's limit
	// on a client's unreleased incoming QoS 2 messages: mosquitto's
	// max_inflight_messages, 20 by default. Above it mosquitto answers an
	// MQTT 3.1.1 PUBLISH with a plain PUBREC (its "quota exceeded" reason
	// code is not on the wire in 3.1.1) and drops the message, so a replay
	// after an outage would lose acknowledged messages without any error
	// (TestQoS2ReplayWithinBrokerQuota; seen in e2e with a window of 32).
	DefaultWindow = 20
	// DefaultKeepAlive is the MQTT keep alive toward the central broker
	// (MQTT 3.1.1 §3.1.2.10).
	DefaultKeepAlive = 30 * time.Second
	// DefaultConnectTimeout bounds one TCP+TLS+CONNECT attempt.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultBackoffMin and DefaultBackoffMax bound the reconnect delay:
	// exponential with full jitter, so a site's many sessions (and many
	// sites) do not reconnect in lock-step after an uplink outage.
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 60 * time.Second
)

// MQTT control packet types (MQTT 3.1.1 §2.2.1, Table 2.1).
const (
	packetPUBREC = 5
)
