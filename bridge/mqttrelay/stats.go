package mqttrelay

import "sync/atomic"

// Stats are the relay's counters; the daemon publishes them as
// mqttrelay_<noun>_<verb>_total.
type Stats struct {
	// Spooled counts device messages accepted into the spool.
	Spooled atomic.Uint64
	// SpoolRefused counts device messages the spool refused (full, disk).
	SpoolRefused atomic.Uint64
	// DuplicatesDropped counts device QoS 2 retransmissions recognised by
	// the spool after a restart and not relayed twice.
	DuplicatesDropped atomic.Uint64
	// Sent counts messages handed to a central session (first sends).
	Sent atomic.Uint64
	// Acked counts messages the central broker acknowledged (QoS 1/2) or
	// that were written (QoS 0), and so left the spool.
	Acked atomic.Uint64
	// Connects counts successful central connections.
	Connects atomic.Uint64
	// ConnectFailures counts failed connection attempts.
	ConnectFailures atomic.Uint64
	// ConnectionsLost counts established central connections that broke.
	ConnectionsLost atomic.Uint64
	// Resumed counts central connections dropped and reopened at once
	// because the uplink came back after an outage (Relay.UplinkUp).
	Resumed atomic.Uint64
	// Connected is the number of connected central sessions (gauge).
	Connected atomic.Int64
	// CommandsDelivered counts central messages handed to devices.
	CommandsDelivered atomic.Uint64
	// CommandsDropped counts central messages that could not be mapped or
	// delivered (outside the mapping, no downlink).
	CommandsDropped atomic.Uint64
	// SpoolErrors counts failed Bind/Ack writes (disk).
	SpoolErrors atomic.Uint64
	// Revoked counts endpoints whose central session was stopped by
	// RemoveEndpoint (removed or re-keyed).
	Revoked atomic.Uint64
}
