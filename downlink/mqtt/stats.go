package mqtt

import "sync/atomic"

// Stats are the broker's counters; the daemon publishes them as
// mqtt_<noun>_<verb>_total.
type Stats struct {
	// Connects counts sessions that authenticated and connected.
	Connects atomic.Uint64
	// Connected is the number of connected devices (gauge).
	Connected atomic.Int64
	// AuthFailures counts refused CONNECTs (bad credentials, unknown
	// certificate, client ID not the endpoint name).
	AuthFailures atomic.Uint64
	// TopicDenied counts publishes, subscriptions and wills outside the
	// endpoint's mapping (topic injection).
	TopicDenied atomic.Uint64
	// Oversized counts connections dropped for a packet over MaxPacketSize.
	Oversized atomic.Uint64
	// Malformed counts connections dropped for a malformed packet.
	Malformed atomic.Uint64
	// Timeouts counts connections closed for silence: no complete CONNECT
	// within Config.ConnectTimeout, or keep alive expired.
	Timeouts atomic.Uint64
	// RateLimited counts publishes refused by the per-endpoint rate limit.
	RateLimited atomic.Uint64
	// ByteRateLimited counts publishes refused by the per-endpoint byte
	// rate limit (Config.PublishByteRate).
	ByteRateLimited atomic.Uint64
	// Upstream counts device messages handed to the Upstream.
	Upstream atomic.Uint64
	// UpstreamRefused counts device messages the Upstream refused (queue
	// full, disk error): the device got a failure or no acknowledgement.
	UpstreamRefused atomic.Uint64
	// Delivered counts messages delivered down to devices by Deliver.
	Delivered atomic.Uint64
	// Bounds (bounds.go): TopicTooLong counts connections closed for a
	// topic over MaxTopicLength, AliasRefused for a topic alias over
	// TopicAliasMaximum; SubscriptionsRefused filters over
	// MaxSubscriptions; RetainDropped retained publishes not kept;
	// PendingConnectRefused(Source) connections closed over
	// MaxPendingConnects(PerSource).
	TopicTooLong, AliasRefused, SubscriptionsRefused, RetainDropped atomic.Uint64
	PendingConnectRefused, PendingConnectRefusedSource              atomic.Uint64
	// CertRefused counts CONNECTs whose site-CA certificate is not the one
	// recorded for its endpoint (replaced) or is on the site CRL.
	CertRefused atomic.Uint64
	// Revoked counts endpoints cut off by Revoke.
	Revoked atomic.Uint64
	// RevokedPublishes counts publishes and wills of a connection being
	// revoked that were dropped.
	RevokedPublishes atomic.Uint64
}
