package esp

import "sync/atomic"

// Stats counts what an SA (or several SAs sharing it) did. Every dropped
// packet increments exactly one of the drop counters.
type Stats struct {
	// PacketsIn and BytesIn count packets opened successfully and their
	// payload bytes.
	PacketsIn, BytesIn atomic.Uint64
	// PacketsOut and BytesOut count packets sealed and their payload bytes.
	PacketsOut, BytesOut atomic.Uint64
	// ReplayDrops counts packets dropped by the anti-replay window.
	ReplayDrops atomic.Uint64
	// AuthFailures counts packets whose ICV did not verify.
	AuthFailures atomic.Uint64
	// BadPadding counts authenticated packets with invalid padding.
	BadPadding atomic.Uint64
	// Malformed counts packets too short or with an impossible length.
	Malformed atomic.Uint64
	// DummyDropped counts dummy packets (Next Header 59) discarded.
	DummyDropped atomic.Uint64
	// SeqOverflows counts Seal calls refused because the sequence number
	// space is used up.
	SeqOverflows atomic.Uint64
	// LimitDrops counts packets refused because the hard lifetime is used up.
	LimitDrops atomic.Uint64
	// SoftLimits counts SAs that reached their soft lifetime (rekey signals).
	SoftLimits atomic.Uint64
}
