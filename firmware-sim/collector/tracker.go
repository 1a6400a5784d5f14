// Package collector is the central side of a simulated fleet: it accepts
// telemetry (a CoAP sink over UDP or DTLS, an MQTT subscriber), decodes
// the SenML packs and tracks per-device sequence numbers (received,
// duplicates, gaps, reordering), so that tests and the demo read TRUE loss
// rather than what the senders believe.
package collector

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// Limits protecting the tracker from hostile or broken senders.
const (
	// MaxDevices bounds the number of distinct device names tracked.
	MaxDevices = 100000
	// MaxSeq bounds accepted sequence numbers (the bitmap grows to the
	// highest one: 2**24 bits = 2 MiB per device at most).
	MaxSeq = 1 << 24
)

// Stats are the collector's own counters.
type Stats struct {
	// Messages counts telemetry messages accepted.
	Messages atomic.Uint64
	// Malformed counts payloads that failed to decode or were rejected.
	Malformed atomic.Uint64
	// TransportErrors counts errors reported by the CoAP transport (failed
	// DTLS handshakes, connection errors).
	TransportErrors atomic.Uint64
}

// Sample is one accepted telemetry message, passed to Config.OnTelemetry.
type Sample struct {
	// Source says how it arrived: "coap", "coaps" or "mqtt", and from
	// where (the peer address or topic).
	Source, From string
	// Telemetry is the decoded pack.
	Telemetry senml.Telemetry
	// Duplicate is true when the sequence number was already seen.
	Duplicate bool
	// At is the arrival time.
	At time.Time
}

// Config configures a Collector.
type Config struct {
	// Logger receives rate-limited warnings; nil discards.
	Logger *slog.Logger
	// OnTelemetry, if set, is called for each accepted message (from the
	// receiving goroutine; keep it short).
	OnTelemetry func(Sample)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Collector tracks telemetry from many devices. It is safe for concurrent
// use by any number of sinks.
type Collector struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	Stats Stats

	mu      sync.Mutex // guards devices and lastWarn
	devices map[string]*track
	// lastWarn rate-limits malformed-input warnings to one per second.
	lastWarn time.Time

	mid atomic.Uint32 // Message IDs for NON responses
}

func (c *Collector) nextMID() uint16 { return uint16(c.mid.Add(1)) }

type track struct {
	seen   []uint64 // bitmap indexed by sequence number
	st     report.SeqStats
	lastAt time.Time
}

// New returns a Collector.
func New(cfg Config) *Collector {
	c := &Collector{cfg: cfg, devices: map[string]*track{}, now: cfg.Now}
	c.log = cfg.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Handle decodes one SenML payload in format f and records it. from
// describes the sender for logs and OnTelemetry.
func (c *Collector) Handle(source, from string, payload []byte, f senml.Format) (senml.Telemetry, error) {
	t, err := senml.DecodeTelemetry(payload, f)
	if err != nil {
		c.malformed(source, from, err)
		return t, err
	}
	dup, err := c.Record(t.Device, t.Seq)
	if err != nil {
		c.malformed(source, from, err)
		return t, err
	}
	c.Stats.Messages.Add(1)
	if c.cfg.OnTelemetry != nil {
		c.cfg.OnTelemetry(Sample{Source: source, From: from, Telemetry: t, Duplicate: dup, At: c.now()})
	}
	return t, nil
}

func (c *Collector) malformed(source, from string, err error) {
	c.Stats.Malformed.Add(1)
	c.mu.Lock()
	now := c.now()
	warn := now.Sub(c.lastWarn) >= time.Second
	if warn {
		c.lastWarn = now
	}
	c.mu.Unlock()
	if warn {
		c.log.Warn("malformed telemetry", "source", source, "peer", from, "err", err)
	}
}

// Record notes sequence number seq from device and reports whether it
// was a duplicate.
func (c *Collector) Record(device string, seq uint64) (duplicate bool, err error) {
	if seq == 0 || seq > MaxSeq {
		return false, ErrSeqRange
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.devices[device]
	if !ok {
		if len(c.devices) >= MaxDevices {
			return false, ErrTooManyDevices
		}
		t = &track{}
		c.devices[device] = t
	}
	t.lastAt = c.now()
	t.st.Received++
	word, bit := seq/64, uint64(1)<<(seq%64)
	for uint64(len(t.seen)) <= word {
		t.seen = append(t.seen, 0)
	}
	if t.seen[word]&bit != 0 {
		t.st.Duplicates++
		return true, nil
	}
	t.seen[word] |= bit
	t.st.Unique++
	if seq < t.st.Highest {
		t.st.Reordered++
		t.st.Gaps-- // a hole below Highest was filled
	} else {
		t.st.Gaps += seq - t.st.Highest - 1
		t.st.Highest = seq
	}
	return false, nil
}

// Device returns what was seen from one device.
func (c *Collector) Device(name string) (report.SeqStats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.devices[name]
	if !ok {
		return report.SeqStats{}, false
	}
	return t.st, true
}

// Has reports whether sequence number seq of device arrived.
func (c *Collector) Has(device string, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.devices[device]
	if !ok || seq/64 >= uint64(len(t.seen)) {
		return false
	}
	return t.seen[seq/64]&(1<<(seq%64)) != 0
}

// Snapshot returns per-device stats keyed by device name.
func (c *Collector) Snapshot() map[string]report.SeqStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]report.SeqStats, len(c.devices))
	for n, t := range c.devices {
		out[n] = t.st
	}
	return out
}

// Names returns the device names seen, sorted.
func (c *Collector) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.devices))
	for n := range c.devices {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Total sums every device's stats; Malformed is the collector's count.
func (c *Collector) Total() report.SeqStats {
	var tot report.SeqStats
	for _, s := range c.Snapshot() {
		tot.Received += s.Received
		tot.Unique += s.Unique
		tot.Duplicates += s.Duplicates
		tot.Reordered += s.Reordered
		tot.Gaps += s.Gaps
		if s.Highest > tot.Highest {
			tot.Highest = s.Highest
		}
	}
	tot.Malformed = c.Stats.Malformed.Load()
	return tot
}
