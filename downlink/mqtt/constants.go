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
	// mountPrefix is the broker-internal namespace of one endpoint: device
	// topic "T" lives at "ep/<endpoint>/T" inside the broker, so endpoints
	// can never see each other's topics (like mosquitto's mount_point).
	mountPrefix = "ep/"
)

// DefaultPublishFilters are the device-side topics a device may publish to.
var DefaultPublishFilters = []string{"telemetry/#", "status/#"}

// DefaultSubscribeFilters are the device-side topics a device may subscribe
// to (commands relayed down from the central broker).
var DefaultSubscribeFilters = []string{"cmd/#"}
