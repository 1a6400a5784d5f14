package spool

import "sync/atomic"

// Stats are the spool's counters and gauges. All fields are safe for
// concurrent reads; the daemon publishes them as spool_* metrics.
type Stats struct {
	// Queued is the number of live (unacknowledged) messages (gauge).
	Queued atomic.Int64
	// Bytes is the encoded size of the live messages (gauge); bounded by
	// Config.MaxBytes.
	Bytes atomic.Int64
	// DiskBytes is the size of all segment files (gauge).
	DiskBytes atomic.Int64
	// Appended counts messages accepted by Append.
	Appended atomic.Uint64
	// Delivered counts messages acknowledged by Ack.
	Delivered atomic.Uint64
	// DroppedOverflow counts QoS 0 messages dropped to make room (the oldest
	// first, or the new one if nothing older could go).
	DroppedOverflow atomic.Uint64
	// RefusedFull counts QoS 1/2 messages refused with ErrFull (the whole
	// spool is full).
	RefusedFull atomic.Uint64
	// RefusedShare counts QoS 1/2 messages refused with ErrShareFull (their
	// endpoint's share is full; other endpoints are unaffected), and
	// DroppedShare QoS 0 messages dropped for the same reason.
	RefusedShare, DroppedShare atomic.Uint64
	// DroppedRemoved counts messages dropped by DropEndpoint.
	DroppedRemoved atomic.Uint64
	// Duplicates counts device QoS 2 retransmissions recognised by Append
	// (ErrDuplicate) and not queued twice.
	Duplicates atomic.Uint64
	// RefusedDisk counts messages refused because the filesystem lacks room
	// for them and the acknowledgements of everything queued (ErrDiskFull).
	RefusedDisk atomic.Uint64
	// WriteErrors counts failed writes or syncs (disk full, I/O errors).
	WriteErrors atomic.Uint64
	// Syncs counts fsync calls on segment files.
	Syncs atomic.Uint64
	// Recovered counts live messages found on disk by Open.
	Recovered atomic.Uint64
	// CorruptRegions counts damaged regions skipped during recovery.
	CorruptRegions atomic.Uint64
	// TornTails counts segments that ended inside a record.
	TornTails atomic.Uint64
	// SkippedBytes counts bytes recovery could not use.
	SkippedBytes atomic.Uint64
	// Compactions counts segments rewritten to reclaim space.
	Compactions atomic.Uint64
}
