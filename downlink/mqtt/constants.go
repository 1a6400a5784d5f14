package mqtt

import "time"

// Defaults for Config fields left zero.
const (
	// DefaultTLSAddr is the MQTT over TLS port (IANA "secure-mqtt", MQTT
	// 3.1.1 §5.1 / MQTT 5 §4.2).
	DefaultTLSAddr = ":8883"
	// DefaultMaxPacketSize bounds one MQTT control packet from a device.
	// Bigger PUBLISHes are refused (MQTT 5 §3.1.2.11.4: the server may
	// disconnect with 0x95 Packet too large) and counted.
	DefaultMaxPacketSize = 256 << 10
	// DefaultConnectTimeout bounds TLS handshake + CONNECT of a new
	// connection.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultPublishByteRate bounds the bytes (topic + payload) one device
	// may publish per second, with a burst of DefaultPublishByteBurst (at
	// least the packet size limit, so one packet of any allowed size
	// passes). A sensor sends a few hundred bytes a minute; without a byte
	// bound one device under its message limit (50 × 200 KB/s) fills the
	// bridge's memory and spool with data nobody can forward that fast
	// (issue 18: +300 MB RSS from one device).
	DefaultPublishByteRate  = 64 << 10
	DefaultPublishByteBurst = 1 << 20
	// mountPrefix is the broker-internal namespace of one endpoint: device
	// topic "T" lives at "ep/<endpoint>/T" inside the broker, so endpoints
	// can never see each other's topics (like mosquitto's mount_point).
	mountPrefix = "ep/"

	// DefaultMaxTopicLength bounds a device's topic names and filters;
	// device topics are short ("telemetry/temp"), the mount prefix and
	// endpoint name come on top inside the broker.
	DefaultMaxTopicLength = 256
	// DefaultTopicAliasMaximum is offered to MQTT 5 devices (mochi's
	// default was 65535, each alias holding a topic of any length).
	DefaultTopicAliasMaximum = 8
	// DefaultMaxSubscriptions per client: a device subscribes to its
	// command topics, a handful.
	DefaultMaxSubscriptions = 16
	// DefaultReceiveMaximum bounds a device's QoS 1/2 publishes awaiting
	// acknowledgement (mochi: 1024).
	DefaultReceiveMaximum = 32
	// DefaultMaxQueued bounds messages kept for one client, e.g. commands
	// for a sleeping device (mochi: 8192); mochi drops the oldest over it.
	DefaultMaxQueued = 256
	// DefaultSessionExpiry bounds how long a disconnected device's session
	// is kept (mochi: forever): three days covers a weekend of sleep.
	DefaultSessionExpiry = 72 * time.Hour
	// DefaultMaxPendingConnects and DefaultMaxPendingConnectsPerSource
	// bound connections without a CONNECT yet (≈ 100 KB each with TLS).
	DefaultMaxPendingConnects          = 128
	DefaultMaxPendingConnectsPerSource = 8
)

// DefaultPublishFilters are the device-side topics a device may publish to.
var DefaultPublishFilters = []string{"telemetry/#", "status/#"}

// DefaultSubscribeFilters are the device-side topics a device may subscribe
// to (commands relayed down from the central broker).
var DefaultSubscribeFilters = []string{"cmd/#"}
