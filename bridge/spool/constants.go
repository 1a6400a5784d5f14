package spool

// On-disk record layout (all integers big-endian). Every record is
// self-delimiting and checksummed so that recovery can tell a complete
// record from a torn write (short tail) or a flipped bit (CRC mismatch):
//
//	offset  size  field
//	0       1     magic (recordMagic)
//	1       1     type  (RecordPut, RecordAck, RecordBind)
//	2       4     body length N
//	6       4     CRC-32C (Castagnoli) over bytes [1, 6) and the body
//	10      N     body
//
// Put body:
//
//	0   8  seq (global, strictly increasing)
//	8   8  enqueue time, Unix nanoseconds
//	16  1  QoS (0..2)
//	17  1  flags (bit 0: retain)
//	18  2  device packet identifier (QoS 2), else 0
//	20  2  endpoint length E, then E bytes of endpoint name
//	..  2  topic length T, then T bytes of topic
//	..     payload (rest of the body)
//
// Ack body:
//
//	0   8  seq
//	8   1  reason (AckDelivered, AckDroppedOverflow, AckDroppedExpired,
//	       AckDroppedRemoved)
//
// Bind body:
//
//	0   8  seq
//	8   2  MQTT packet identifier (non-zero)
//	10  1  stage (1 PUBLISH sent, 2 PUBREL sent)
const (
	recordMagic      = 0xF5
	recordHeaderLen  = 10
	putFixedLen      = 8 + 8 + 1 + 1 + 2 + 2 + 2
	recentQoS2       = 64 // device QoS 2 packet ids remembered per endpoint
	ackBodyLen       = 9
	bindBodyLen      = 11
	maxEndpointLen   = 255
	maxTopicLen      = 65535 // MQTT topic names are at most 65535 bytes (MQTT 3.1.1 §1.5.3)
	segmentPrefix    = "seg-"
	segmentSuffix    = ".log"
	segmentNameWidth = 16
)

// Defaults for Config fields left zero.
const (
	// DefaultMaxBytes bounds the live (unacknowledged) bytes in the spool.
	DefaultMaxBytes = 64 << 20
	// DefaultEndpointShareDivisor: an endpoint's share of MaxBytes is
	// MaxBytes / DefaultEndpointShareDivisor when Config.EndpointMaxBytes
	// is zero (at least minEndpointShare, at most MaxBytes).
	DefaultEndpointShareDivisor = 8
	minEndpointShare            = 1 << 20
	// DefaultSegmentBytes is the size at which the active segment is
	// rotated.
	DefaultSegmentBytes = 4 << 20
	// DefaultMaxRecordBody bounds one record body; a length field above it is
	// treated as corruption (a flipped bit in the length must not make
	// recovery allocate gigabytes).
	DefaultMaxRecordBody = 1<<20 + 64<<10
)

// Disk space kept free by Append (see the package comment).
const (
	// resolveReserve covers what one queued message may still write: two
	// Bind records (QoS 2: PUBLISH sent, PUBREL sent) and its Ack.
	resolveReserve = 2*(recordHeaderLen+bindBodyLen) + recordHeaderLen + ackBodyLen
	// spaceSlack covers filesystem block rounding (a record may start a
	// new block) for those writes.
	spaceSlack = 16 << 10
)
