package report

import (
	"encoding/json"
	"io"
	"time"
)

// SeqStats is what a central collector saw of one device's sequence
// numbers (or of the whole fleet, summed).
type SeqStats struct {
	// Received counts every telemetry message that arrived, duplicates
	// included.
	Received uint64 `json:"received"`
	// Unique counts distinct sequence numbers.
	Unique uint64 `json:"unique"`
	// Duplicates counts repeats of a sequence number already seen.
	Duplicates uint64 `json:"duplicates"`
	// Reordered counts messages whose sequence number was below the
	// highest seen so far (and not a duplicate).
	Reordered uint64 `json:"reordered"`
	// Gaps counts sequence numbers below the highest seen that never
	// arrived (1..Highest minus Unique).
	Gaps uint64 `json:"gaps"`
	// Highest is the highest sequence number seen.
	Highest uint64 `json:"highest"`
	// Malformed counts messages the collector could not decode (fleet
	// totals only).
	Malformed uint64 `json:"malformed,omitempty"`
}

// Latency summarises a Histogram in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// LatencyOf summarises h.
func LatencyOf(h *Histogram) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Latency{Count: h.Count(), P50Ms: ms(h.Quantile(0.5)), P99Ms: ms(h.Quantile(0.99)), MaxMs: ms(h.Max())}
}

// Counters is the JSON form of Stats.
type Counters struct {
	Connected         int64   `json:"connected"`
	Handshakes        uint64  `json:"handshakes"`
	HandshakeFailures uint64  `json:"handshake_failures"`
	Reconnects        uint64  `json:"reconnects"`
	Rebinds           uint64  `json:"rebinds"`
	Sent              uint64  `json:"sent"`
	Acked             uint64  `json:"acked"`
	Unacked           uint64  `json:"unacked"`
	Unavailable       uint64  `json:"unavailable_503,omitempty"`
	Served            uint64  `json:"served"`
	Notifications     uint64  `json:"notifications"`
	Commands          uint64  `json:"commands_received"`
	CommandReplies    uint64  `json:"command_replies"`
	DroppedOut        uint64  `json:"injected_drops_out"`
	DroppedIn         uint64  `json:"injected_drops_in"`
	LastSeq           uint64  `json:"last_seq,omitempty"`
	Latency           Latency `json:"latency"`
}

// CountersOf snapshots s.
func CountersOf(s *Stats) Counters {
	return Counters{
		Connected:         s.Connected.Load(),
		Handshakes:        s.Handshakes.Load(),
		HandshakeFailures: s.HandshakeFailures.Load(),
		Reconnects:        s.Reconnects.Load(),
		Rebinds:           s.Rebinds.Load(),
		Sent:              s.Sent.Load(),
		Acked:             s.Acked.Load(),
		Unacked:           s.Unacked.Load(),
		Unavailable:       s.Unavailable.Load(),
		Served:            s.Served.Load(),
		Notifications:     s.Notifications.Load(),
		Commands:          s.Commands.Load(),
		CommandReplies:    s.CommandReplies.Load(),
		DroppedOut:        s.DroppedOut.Load(),
		DroppedIn:         s.DroppedIn.Load(),
		LastSeq:           s.LastSeq.Load(),
		Latency:           LatencyOf(&s.Latency),
	}
}

// Device is one device's line in the report.
type Device struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	Protocol string `json:"protocol"`
	Counters
	// Collected is what the collector saw for this device, if configured.
	Collected *SeqStats `json:"collected,omitempty"`
	// Lost is Sent minus what arrived: Sent - Collected.Unique when a
	// collector is configured, else Sent - Acked.
	Lost uint64 `json:"lost"`
}

// Report is the final JSON report of a run.
type Report struct {
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
	Seconds  float64   `json:"seconds"`
	Devices  int       `json:"devices"`
	// Reporting counts devices with at least one message through: seen by
	// the collector when one is configured, else acknowledged.
	Reporting int `json:"reporting"`
	// Totals sums every device.
	Totals Counters `json:"totals"`
	// LossSource is "collector" when Lost comes from the central
	// collector's sequence numbers, "acks" when only acks were available.
	LossSource string `json:"loss_source"`
	// Lost is the sum of per-device Lost.
	Lost uint64 `json:"lost"`
	// Collected sums the collector's per-device SeqStats.
	Collected *SeqStats `json:"collected,omitempty"`
	// PerDevice lists every device, in fleet order.
	PerDevice []Device `json:"per_device"`
	// Errors lists distinct error messages seen (bounded).
	Errors []string `json:"errors,omitempty"`
}

// WriteJSON writes r indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Lost computes loss for one device: from the collector's unique count when
// available (true loss), else from acks.
func Lost(sent, acked uint64, c *SeqStats) uint64 {
	got := acked
	if c != nil {
		got = c.Unique
	}
	if got >= sent {
		return 0
	}
	return sent - got
}
