// Package fleetview holds the JSON views of the fleet status page: the
// documents the gateway and the bridge serve under /api/ on their HTTP
// listener (internal/statuspage), one struct per view. The CLIs' --json
// output uses the same types, so a script reads one schema whether it asks
// the page's API or the control socket.
//
// Views are plain data: no methods that reach into a daemon. Times are UTC
// RFC 3339 in JSON; durations are whole seconds (the *Seconds fields), so
// a shell script needs no Go duration parser.
package fleetview

import "time"

// Sessions is the gateway's sessions view (GET /api/sessions).
type Sessions struct {
	Now      time.Time `json:"now"`
	Started  time.Time `json:"started"`
	Engine   string    `json:"engine"`
	Sessions []Session `json:"sessions"`
}

// Session is one established session at the gateway.
type Session struct {
	ID       uint64 `json:"id"`
	Identity string `json:"identity"`
	// Peer is the peer implementation when recognised (strongSwan,
	// Windows, SoftEther, fleetgate, ...); "" when unknown.
	Peer string `json:"peer,omitempty"`
	// Outer is the peer's outer (NAT-T) address:port.
	Outer   string   `json:"outer,omitempty"`
	VPNAddr string   `json:"vpn_addr"`
	Routes  []string `json:"routes,omitempty"`
	// IPv6Prefix is the site's IPv6 prefix (static, RADIUS or the pool's
	// /64), routed beside Routes; "" when the session is IPv4 only.
	IPv6Prefix string `json:"ipv6_prefix,omitempty"`
	Suite      string `json:"suite,omitempty"`
	// Since is when the session came up; UptimeSeconds is Now - Since.
	Since         time.Time `json:"since"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	// RxBytes came from the session (uplink), TxBytes went to it.
	RxBytes   uint64 `json:"rx_bytes"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	// Rekeys counts rekeys of the session's SAs when the engine reports
	// them per session (-1: not known).
	Rekeys int64 `json:"rekeys"`
}

// Failures is the gateway's recent set-up failures view (GET
// /api/failures): a bounded ring, newest first.
type Failures struct {
	// Capacity is the ring's size; Total counts every failure since start
	// (Total - len(Failures) were overwritten).
	Capacity int       `json:"capacity"`
	Total    uint64    `json:"total"`
	Failures []Failure `json:"failures"`
}

// Failure is one failed session set-up.
type Failure struct {
	Time time.Time `json:"time"`
	// Phase is where it failed: admission, ike_main, ike_quick, auth,
	// ipcp, session.
	Phase string `json:"phase"`
	// Reason is the short machine reason (auth_failed: wrong PSK or
	// certificate, no_proposal_chosen: proposal mismatch, bad_credentials:
	// PPP authentication, ...); Text says it for a person.
	Reason string `json:"reason"`
	Text   string `json:"text"`
	// Peer (outer address) and Identity when the failing layer knows them.
	Peer     string `json:"peer,omitempty"`
	Identity string `json:"identity,omitempty"`
}

// Credentials is the gateway's credential expiry view (GET
// /api/credentials), soonest first.
type Credentials struct {
	Now time.Time `json:"now"`
	// WarnSeconds is the window within which a credential counts as
	// expiring soon.
	WarnSeconds int64        `json:"warn_seconds"`
	Credentials []Credential `json:"credentials"`
}

// Credential is one certificate or PSK with an end date.
type Credential struct {
	Name string `json:"name"`
	// Type is "cert" or "psk".
	Type     string    `json:"type"`
	NotAfter time.Time `json:"not_after"`
	// ExpiresInSeconds is negative once expired.
	ExpiresInSeconds int64 `json:"expires_in_seconds"`
	Soon             bool  `json:"soon"`
	Expired          bool  `json:"expired"`
}

// Uplink is the bridge's uplink view with its history (GET /api/uplink).
type Uplink struct {
	Now time.Time `json:"now"`
	// State is "up", "connecting", "backoff", "down" or "none" (no uplink
	// configured); Detail is the daemon's one-line state.
	State  string    `json:"state"`
	Detail string    `json:"detail"`
	Since  time.Time `json:"since"`
	// Gateway is the gateway of the current or last attempt; Addr the
	// PPP address while up.
	Gateway string `json:"gateway,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Suite   string `json:"suite,omitempty"`
	// IPv6CP is true while IPV6CP is open on the tunnel; LinkLocal6 is
	// the bridge's link-local address on it.
	IPv6CP     bool   `json:"ipv6cp"`
	LinkLocal6 string `json:"link_local6,omitempty"`
	Attempts   uint64 `json:"attempts"`
	Failures   uint64 `json:"failures"`
	Connects   uint64 `json:"connects"`
	// History is a bounded ring of state changes, newest first.
	History []UplinkEvent `json:"history"`
}

// UplinkEvent is one uplink state change.
type UplinkEvent struct {
	Time  time.Time `json:"time"`
	State string    `json:"state"`
	// Reason is why (the failed phase and error when it went down).
	Reason string `json:"reason,omitempty"`
	// Gateway the attempt or tunnel was with.
	Gateway string `json:"gateway,omitempty"`
	// DurationSeconds is how long the uplink stayed in this state (up to
	// now for the newest event).
	DurationSeconds int64 `json:"duration_seconds"`
}

// Endpoints is the bridge's endpoints view (GET /api/endpoints).
type Endpoints struct {
	Now time.Time `json:"now"`
	// QuietAfterSeconds: an endpoint that was seen but not for this long
	// is quiet.
	QuietAfterSeconds int64      `json:"quiet_after_seconds"`
	Endpoints         []Endpoint `json:"endpoints"`
}

// Endpoint is one configured endpoint at the bridge.
type Endpoint struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Addr6 is the endpoint's IPv6 address (bridge ipv6_prefix set).
	Addr6    string `json:"addr6,omitempty"`
	Protocol string `json:"protocol"`
	// Online: a DTLS session (CoAP) or MQTT connection exists now.
	Online bool `json:"online"`
	// LastSeen is the last record from the device (zero: never seen since
	// the bridge started).
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Sleeping: no session now, seen within the quiet window; central
	// requests wait in its queue (Queued).
	Sleeping bool `json:"sleeping"`
	// Quiet: seen once, then nothing for QuietAfterSeconds.
	Quiet  bool `json:"quiet"`
	Queued int  `json:"queued"`
	// Spooled/SpoolBytes: telemetry held for central (CoAP spool, or the
	// MQTT relay's spool bytes in SpoolBytes).
	Spooled    int    `json:"spooled"`
	SpoolBytes int64  `json:"spool_bytes"`
	Relay      string `json:"relay,omitempty"`
	// BytesIn/BytesOut: the current session's traffic; InRate/OutRate the
	// bytes per second over the last sample interval.
	BytesIn  uint64  `json:"bytes_in"`
	BytesOut uint64  `json:"bytes_out"`
	InRate   float64 `json:"in_rate"`
	OutRate  float64 `json:"out_rate"`
}

// Charts is a daemon's chart data (GET /api/charts): bounded series of
// samples taken at a fixed interval.
type Charts struct {
	IntervalSeconds float64  `json:"interval_seconds"`
	Series          []Series `json:"series"`
}

// Series is one chart line.
type Series struct {
	Name string `json:"name"`
	// Unit is "B/s", "sessions", "endpoints", ...
	Unit   string  `json:"unit"`
	Points []Point `json:"points"`
}

// Point is one sample: T in Unix milliseconds, V the value.
type Point struct {
	T int64   `json:"t"`
	V float64 `json:"v"`
}
