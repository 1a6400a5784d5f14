package spool

import (
	"errors"
	"fmt"
)

// Errors returned by the record codec and the spool.
var (
	// ErrShort means the buffer ends inside a record: a torn tail.
	ErrShort = errors.New("spool: short record (torn write)")
	// ErrMagic means a record does not start with the record magic byte.
	ErrMagic = errors.New("spool: bad record magic")
	// ErrChecksum means the CRC-32C of a record does not match.
	ErrChecksum = errors.New("spool: record checksum mismatch")
	// ErrTooLarge means a record's declared length exceeds the limit.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrBadRecord means a checksummed record has an invalid body.
	ErrBadRecord = errors.New("spool: malformed record body")
	// ErrFull means the byte bound is reached and no QoS 0 message could be
	// dropped to make room: a QoS 1/2 message is refused (the broker turns it
	// into a failure reason toward the device, which keeps it and retries).
	ErrFull = errors.New("spool: queue full")
	// ErrShareFull (wrapping ErrFull) means the endpoint's own share of
	// the spool (Config.EndpointMaxBytes) is full and none of its QoS 0
	// messages could be dropped: one device cannot take the room of the
	// others.
	ErrShareFull = fmt.Errorf("%w: endpoint share", ErrFull)
	// ErrWrite means the record could not be written or synced (disk full,
	// I/O error); nothing was queued.
	ErrWrite = errors.New("spool: write failed")
	// ErrDiskFull (wrapped with ErrWrite) means the filesystem lacks room
	// for a new message plus the acknowledgements of everything queued; the
	// message was refused before anything was written.
	ErrDiskFull = errors.New("spool: disk full")
	// ErrDuplicate means a QoS 2 PUBLISH with the DUP flag repeats a
	// message this endpoint already queued under the same device packet
	// identifier, topic and payload (a device retransmitting after the
	// bridge restarted and forgot the MQTT session): it is not queued again,
	// and the broker acknowledges it as received (MQTT 3.1.1 §4.3.3).
	ErrDuplicate = errors.New("spool: duplicate QoS 2 message")
	// ErrClosed means the spool was closed.
	ErrClosed = errors.New("spool: closed")
	// ErrInvalid means a message cannot be stored (endpoint or topic too
	// long, QoS above 2, empty endpoint).
	ErrInvalid = errors.New("spool: invalid message")
)
