// Package report holds the simulator's counters, a latency histogram, the
// live one-screen summary and the final JSON report.
package report

import (
	"math"
	"sync/atomic"
	"time"
)

// Stats are one device's counters; the fleet totals are their sums. Every
// field is updated atomically by the device's goroutines and read by the
// summary printer.
type Stats struct {
	// Connected is 1 while the device has an established session.
	Connected atomic.Int64
	// Handshakes counts completed DTLS handshakes / MQTT CONNACKs.
	Handshakes atomic.Uint64
	// HandshakeFailures counts failed connection attempts.
	HandshakeFailures atomic.Uint64
	// Reconnects counts sessions re-established after an error.
	Reconnects atomic.Uint64
	// Rebinds counts injected NAT rebindings (new source port).
	Rebinds atomic.Uint64
	// Sent counts telemetry messages handed to the transport (each
	// sequence number once, retransmissions not included).
	Sent atomic.Uint64
	// Acked counts telemetry messages the peer acknowledged (CoAP ACK with
	// a 2.xx response, MQTT PUBACK), each sequence number at most once.
	Acked atomic.Uint64
	// Unacked counts messages that timed out or failed without an ack.
	Unacked atomic.Uint64
	// Unavailable counts telemetry messages answered 5.03 Service
	// Unavailable (CoAP; included in Unacked).
	Unavailable atomic.Uint64
	// Served counts requests the device answered on its CoAP server side.
	Served atomic.Uint64
	// Notifications counts observe notifications the device sent.
	Notifications atomic.Uint64
	// Commands counts MQTT commands received on the device's command
	// topic; CommandReplies the replies the broker acknowledged (PUBACK).
	Commands, CommandReplies atomic.Uint64
	// DroppedOut and DroppedIn count datagrams dropped by injected loss or
	// by the radio being off (sleep).
	DroppedOut, DroppedIn atomic.Uint64
	// LastSeq is the last sequence number sent.
	LastSeq atomic.Uint64
	// Latency holds send → ack times.
	Latency Histogram
}

// Add adds o's counters into s (for fleet totals; s must not be shared).
func (s *Stats) Add(o *Stats) {
	s.Connected.Add(o.Connected.Load())
	s.Handshakes.Add(o.Handshakes.Load())
	s.HandshakeFailures.Add(o.HandshakeFailures.Load())
	s.Reconnects.Add(o.Reconnects.Load())
	s.Rebinds.Add(o.Rebinds.Load())
	s.Sent.Add(o.Sent.Load())
	s.Acked.Add(o.Acked.Load())
	s.Unacked.Add(o.Unacked.Load())
	s.Unavailable.Add(o.Unavailable.Load())
	s.Served.Add(o.Served.Load())
	s.Notifications.Add(o.Notifications.Load())
	s.Commands.Add(o.Commands.Load())
	s.CommandReplies.Add(o.CommandReplies.Load())
	s.DroppedOut.Add(o.DroppedOut.Load())
	s.DroppedIn.Add(o.DroppedIn.Load())
	s.Latency.Merge(&o.Latency)
}

// Histogram is a lock-free latency histogram with logarithmic buckets
// (about 4% wide, from 10µs to ~100s): quantiles are exact to a bucket.
type Histogram struct {
	buckets [histBuckets]atomic.Uint64
	count   atomic.Uint64
	maxNs   atomic.Int64
}

const (
	histBuckets = 420
	histBase    = 10 * time.Microsecond
	histGrowth  = 1.04
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	if d <= histBase {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histBase))/logGrowth) + 1
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// upper returns the upper bound of bucket i.
func upper(i int) time.Duration {
	return time.Duration(float64(histBase) * math.Pow(histGrowth, float64(i)))
}

// Observe records one latency.
func (h *Histogram) Observe(d time.Duration) {
	h.buckets[bucketOf(d)].Add(1)
	h.count.Add(1)
	for {
		m := h.maxNs.Load()
		if int64(d) <= m || h.maxNs.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Merge adds o's samples into h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.buckets {
		if n := o.buckets[i].Load(); n > 0 {
			h.buckets[i].Add(n)
		}
	}
	h.count.Add(o.count.Load())
	for {
		m, om := h.maxNs.Load(), o.maxNs.Load()
		if om <= m || h.maxNs.CompareAndSwap(m, om) {
			return
		}
	}
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Max returns the largest sample.
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxNs.Load()) }

// Quantile returns the upper bound of the bucket holding quantile q
// (0 < q <= 1), capped at Max; 0 without samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			if u, m := upper(i), h.Max(); u > m {
				return m
			}
			return upper(i)
		}
	}
	return h.Max()
}
