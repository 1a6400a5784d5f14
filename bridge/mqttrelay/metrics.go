package mqttrelay

import (
	"time"

	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
)

// Sample is one metric value in Prometheus terms (snake_case name, help,
// counter or gauge, label pairs). The daemon's /metrics collector turns
// each Sample into a const metric; this package does not depend on the
// Prometheus client.
type Sample struct {
	Name    string
	Help    string
	Counter bool
	// Labels are name/value pairs: {"endpoint", "sensor-1", "state", "connected"}.
	Labels []string
	Value  float64
}

// Metrics walks the MQTT side of the bridge: the spool (queue depth, bytes,
// oldest age, drops by reason, recovery), the relay (sessions, sends,
// acks), each endpoint's session state and queue, and the site broker's
// counters (if b is not nil).
func (r *Relay) Metrics(b *mqtt.Broker, fn func(Sample)) {
	gauge := func(name, help string, v float64, labels ...string) {
		fn(Sample{Name: name, Help: help, Labels: labels, Value: v})
	}
	counter := func(name, help string, v uint64, labels ...string) {
		fn(Sample{Name: name, Help: help, Counter: true, Labels: labels, Value: float64(v)})
	}
	sp := r.cfg.Spool
	s := sp.Stats()
	gauge("spool_messages", "Messages waiting in the store-and-forward queue.", float64(s.Queued.Load()))
	gauge("spool_bytes", "Encoded bytes of the queued messages (bounded by the configured maximum).", float64(s.Bytes.Load()))
	gauge("spool_disk_bytes", "Size of the spool's segment files.", float64(s.DiskBytes.Load()))
	gauge("spool_oldest_age_seconds", "Age of the oldest queued message.", sp.OldestAge().Seconds())
	counter("spool_messages_appended_total", "Messages accepted into the queue.", s.Appended.Load())
	counter("spool_messages_delivered_total", "Messages confirmed by the central broker and removed.", s.Delivered.Load())
	const dropped = "Messages dropped or refused, by reason."
	counter("spool_messages_dropped_total", dropped, s.DroppedOverflow.Load(), "reason", "overflow_qos0")
	counter("spool_messages_dropped_total", dropped, s.RefusedFull.Load(), "reason", "refused_full")
	counter("spool_messages_dropped_total", dropped, s.RefusedDisk.Load(), "reason", "refused_disk")
	counter("spool_messages_dropped_total", dropped, s.Duplicates.Load(), "reason", "duplicate_qos2")
	counter("spool_messages_dropped_total", dropped, s.RefusedShare.Load(), "reason", "refused_share")
	counter("spool_messages_dropped_total", dropped, s.DroppedShare.Load(), "reason", "dropped_share_qos0")
	counter("spool_messages_dropped_total", dropped, s.DroppedRemoved.Load(), "reason", "endpoint_removed")
	counter("spool_write_errors_total", "Failed spool writes or fsyncs (disk full, I/O error).", s.WriteErrors.Load())
	counter("spool_fsyncs_total", "fsync calls on spool segments.", s.Syncs.Load())
	gauge("spool_recovered_messages", "Messages found on disk at the last start.", float64(s.Recovered.Load()))
	const damaged = "Damage skipped by recovery, by kind."
	counter("spool_damaged_total", damaged, s.CorruptRegions.Load(), "kind", "corrupt_region")
	counter("spool_damaged_total", damaged, s.TornTails.Load(), "kind", "torn_tail")

	rs := &r.stats
	const events = "Relay events, by event."
	for _, e := range []struct {
		name string
		v    uint64
	}{
		{"spooled", rs.Spooled.Load()}, {"spool_refused", rs.SpoolRefused.Load()}, {"duplicate_dropped", rs.DuplicatesDropped.Load()},
		{"sent", rs.Sent.Load()}, {"acked", rs.Acked.Load()}, {"connect", rs.Connects.Load()},
		{"connect_failed", rs.ConnectFailures.Load()}, {"connection_lost", rs.ConnectionsLost.Load()},
		{"command_delivered", rs.CommandsDelivered.Load()}, {"command_dropped", rs.CommandsDropped.Load()},
		{"spool_error", rs.SpoolErrors.Load()}, {"endpoint_revoked", rs.Revoked.Load()},
		{"uplink_resumed", rs.Resumed.Load()},
	} {
		counter("mqttrelay_events_total", events, e.v, "event", e.name)
	}
	gauge("mqttrelay_sessions_connected", "Central sessions currently connected.", float64(rs.Connected.Load()))
	now := r.cfg.Clock.Now()
	for _, st := range r.Status() {
		gauge("mqttrelay_endpoint_state", "1 for the central session state of each endpoint.", 1,
			"endpoint", st.Endpoint, "source", st.Source.String(), "state", st.State.String())
		gauge("mqttrelay_endpoint_queued_messages", "Queued upstream messages per endpoint.", float64(st.Queued), "endpoint", st.Endpoint)
		gauge("mqttrelay_endpoint_queued_bytes", "Queued upstream bytes per endpoint.", float64(st.Bytes), "endpoint", st.Endpoint)
		var age time.Duration
		if !st.Oldest.IsZero() {
			age = now.Sub(st.Oldest)
		}
		gauge("mqttrelay_endpoint_oldest_age_seconds", "Age of the endpoint's oldest queued message.", age.Seconds(), "endpoint", st.Endpoint)
		gauge("mqttrelay_endpoint_inflight_messages", "Messages sent to the central broker, not yet acknowledged.", float64(st.InFlight), "endpoint", st.Endpoint)
	}
	if b == nil {
		return
	}
	bs := b.Stats()
	const bevents = "Site MQTT broker events, by event."
	for _, e := range []struct {
		name string
		v    uint64
	}{
		{"connect", bs.Connects.Load()}, {"auth_failed", bs.AuthFailures.Load()}, {"topic_denied", bs.TopicDenied.Load()},
		{"oversized", bs.Oversized.Load()}, {"malformed", bs.Malformed.Load()}, {"timeout", bs.Timeouts.Load()}, {"rate_limited", bs.RateLimited.Load()}, {"byte_rate_limited", bs.ByteRateLimited.Load()}, {"upstream", bs.Upstream.Load()},
		{"upstream_refused", bs.UpstreamRefused.Load()}, {"delivered", bs.Delivered.Load()},
		{"topic_too_long", bs.TopicTooLong.Load()}, {"alias_refused", bs.AliasRefused.Load()},
		{"subscription_refused", bs.SubscriptionsRefused.Load()}, {"retain_dropped", bs.RetainDropped.Load()},
		{"pending_connect_refused", bs.PendingConnectRefused.Load()}, {"pending_connect_refused_source", bs.PendingConnectRefusedSource.Load()},
		{"revoked", bs.Revoked.Load()}, {"revoked_publish_dropped", bs.RevokedPublishes.Load()}, {"cert_refused", bs.CertRefused.Load()},
	} {
		counter("mqtt_events_total", bevents, e.v, "event", e.name)
	}
	gauge("mqtt_devices_connected", "Devices connected to the site broker.", float64(bs.Connected.Load()))
}
