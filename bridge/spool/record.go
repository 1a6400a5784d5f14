package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// RecordType is the type byte of an on-disk record.
type RecordType uint8

const (
	// RecordPut stores one message.
	RecordPut RecordType = 1
	// RecordAck resolves one message (delivered or dropped).
	RecordAck RecordType = 2
	// RecordBind records that a message was handed to the upstream MQTT
	// session under a packet identifier (Stage 1: PUBLISH sent, Stage 2:
	// PUBREC received, PUBREL sent), so that after a restart the same
	// packet identifier is resumed and the central broker can recognise a
	// QoS 2 duplicate (MQTT 3.1.1 §4.3.3).
	RecordBind RecordType = 3
)

// AckReason says why a message left the queue.
type AckReason uint8

const (
	// AckDelivered: the central broker confirmed it (PUBACK / PUBCOMP).
	AckDelivered AckReason = 0
	// AckDroppedOverflow: a QoS 0 message dropped to make room.
	AckDroppedOverflow AckReason = 1
	// AckDroppedExpired: dropped because it outlived its expiry.
	AckDroppedExpired AckReason = 2
	// AckDroppedRemoved: dropped because its endpoint was removed
	// (DropEndpoint).
	AckDroppedRemoved AckReason = 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Message is one queued upstream message of one endpoint.
type Message struct {
	// Seq orders messages; assigned by Append, strictly increasing.
	Seq uint64
	// Endpoint is the endpoint (device) name.
	Endpoint string
	// Topic is the device-side topic name (mapping happens at replay).
	Topic string
	// QoS is the MQTT QoS the device published with (0..2).
	QoS byte
	// Retain is the MQTT retain flag.
	Retain bool
	// Enqueued is when the bridge accepted the message.
	Enqueued time.Time
	// Payload is the application payload.
	Payload []byte
	// DevicePacketID is the packet identifier the device used for a QoS 2
	// PUBLISH (0 otherwise); with Dup it lets Append recognise the
	// device's retransmission after a bridge restart (see ErrDuplicate).
	DevicePacketID uint16
	// Dup is the DUP flag of the device's PUBLISH (input to Append only,
	// not stored).
	Dup bool
	// PacketID and Stage are the upstream binding (see RecordBind); zero
	// when the message was not handed to the upstream session yet.
	PacketID uint16
	Stage    uint8
}

// Record is one decoded on-disk record. For RecordPut, Msg is set (its
// PacketID and Stage are not part of the Put); for RecordAck, Seq and
// Reason; for RecordBind, Seq, PacketID and Stage.
type Record struct {
	Type     RecordType
	Msg      Message
	Seq      uint64
	Reason   AckReason
	PacketID uint16
	Stage    uint8
}

// encodedLen returns the size of the record AppendRecord would write.
func (r Record) encodedLen() int {
	switch r.Type {
	case RecordAck:
		return recordHeaderLen + ackBodyLen
	case RecordBind:
		return recordHeaderLen + bindBodyLen
	}
	return recordHeaderLen + putFixedLen + len(r.Msg.Endpoint) + len(r.Msg.Topic) + len(r.Msg.Payload)
}

// AppendRecord appends the encoding of r to b.
func AppendRecord(b []byte, r Record) ([]byte, error) {
	start := len(b)
	b = append(b, recordMagic, byte(r.Type), 0, 0, 0, 0, 0, 0, 0, 0)
	switch r.Type {
	case RecordPut:
		m := &r.Msg
		if m.Endpoint == "" || len(m.Endpoint) > maxEndpointLen || len(m.Topic) > maxTopicLen || m.QoS > 2 {
			return b[:start], ErrInvalid
		}
		b = binary.BigEndian.AppendUint64(b, m.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(m.Enqueued.UnixNano()))
		var flags byte
		if m.Retain {
			flags |= 1
		}
		b = append(b, m.QoS, flags)
		b = binary.BigEndian.AppendUint16(b, m.DevicePacketID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Endpoint)))
		b = append(b, m.Endpoint...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Topic)))
		b = append(b, m.Topic...)
		b = append(b, m.Payload...)
	case RecordAck:
		b = binary.BigEndian.AppendUint64(b, r.Seq)
		b = append(b, byte(r.Reason))
	case RecordBind:
		if r.Stage < 1 || r.Stage > 2 || r.PacketID == 0 {
			return b[:start], fmt.Errorf("%w: bind stage %d packet id %d", ErrInvalid, r.Stage, r.PacketID)
		}
		b = binary.BigEndian.AppendUint64(b, r.Seq)
		b = binary.BigEndian.AppendUint16(b, r.PacketID)
		b = append(b, r.Stage)
	default:
		return b[:start], fmt.Errorf("%w: type %d", ErrInvalid, r.Type)
	}
	body := len(b) - start - recordHeaderLen
	binary.BigEndian.PutUint32(b[start+2:], uint32(body))
	crc := crc32.Update(0, castagnoli, b[start+1:start+6])
	crc = crc32.Update(crc, castagnoli, b[start+recordHeaderLen:])
	binary.BigEndian.PutUint32(b[start+6:], crc)
	return b, nil
}

// ParseRecord decodes the record at the start of b and returns it with the
// number of bytes it occupies. maxBody bounds the declared body length
// (0 means DefaultMaxRecordBody). It validates before parsing: header length,
// magic, declared length against maxBody and against len(b), then the
// checksum, then the body layout. The returned Message's Payload, Topic and
// Endpoint are copies and do not alias b.
func ParseRecord(b []byte, maxBody int) (Record, int, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxRecordBody
	}
	if len(b) < recordHeaderLen {
		return Record{}, 0, ErrShort
	}
	if b[0] != recordMagic {
		return Record{}, 0, ErrMagic
	}
	n := binary.BigEndian.Uint32(b[2:6])
	if uint64(n) > uint64(maxBody) {
		return Record{}, 0, ErrTooLarge
	}
	total := recordHeaderLen + int(n)
	if len(b) < total {
		return Record{}, 0, ErrShort
	}
	body := b[recordHeaderLen:total]
	crc := crc32.Update(0, castagnoli, b[1:6])
	crc = crc32.Update(crc, castagnoli, body)
	if crc != binary.BigEndian.Uint32(b[6:10]) {
		return Record{}, 0, ErrChecksum
	}
	r := Record{Type: RecordType(b[1])}
	switch r.Type {
	case RecordPut:
		if len(body) < putFixedLen {
			return Record{}, 0, fmt.Errorf("%w: put body %d bytes", ErrBadRecord, len(body))
		}
		m := &r.Msg
		m.Seq = binary.BigEndian.Uint64(body[0:8])
		m.Enqueued = time.Unix(0, int64(binary.BigEndian.Uint64(body[8:16])))
		m.QoS = body[16]
		if m.QoS > 2 || body[17]&^1 != 0 {
			return Record{}, 0, fmt.Errorf("%w: qos %d flags %#x", ErrBadRecord, body[16], body[17])
		}
		m.Retain = body[17]&1 != 0
		m.DevicePacketID = binary.BigEndian.Uint16(body[18:20])
		rest := body[20:]
		el := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if el == 0 || el > maxEndpointLen || el+2 > len(rest) {
			return Record{}, 0, fmt.Errorf("%w: endpoint length %d", ErrBadRecord, el)
		}
		m.Endpoint = string(rest[:el])
		rest = rest[el:]
		tl := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if tl > len(rest) {
			return Record{}, 0, fmt.Errorf("%w: topic length %d", ErrBadRecord, tl)
		}
		m.Topic = string(rest[:tl])
		m.Payload = append([]byte(nil), rest[tl:]...)
		r.Seq = m.Seq
	case RecordAck:
		if len(body) != ackBodyLen {
			return Record{}, 0, fmt.Errorf("%w: ack body %d bytes", ErrBadRecord, len(body))
		}
		r.Seq = binary.BigEndian.Uint64(body[0:8])
		r.Reason = AckReason(body[8])
		if r.Reason > AckDroppedRemoved {
			return Record{}, 0, fmt.Errorf("%w: ack reason %d", ErrBadRecord, r.Reason)
		}
	case RecordBind:
		if len(body) != bindBodyLen {
			return Record{}, 0, fmt.Errorf("%w: bind body %d bytes", ErrBadRecord, len(body))
		}
		r.Seq = binary.BigEndian.Uint64(body[0:8])
		r.PacketID = binary.BigEndian.Uint16(body[8:10])
		r.Stage = body[10]
		if r.Stage < 1 || r.Stage > 2 || r.PacketID == 0 {
			return Record{}, 0, fmt.Errorf("%w: bind stage %d packet id %d", ErrBadRecord, r.Stage, r.PacketID)
		}
	default:
		return Record{}, 0, fmt.Errorf("%w: type %d", ErrBadRecord, r.Type)
	}
	return r, total, nil
}

// ScanResult summarises a ScanSegment pass.
type ScanResult struct {
	// Records is the number of valid records found.
	Records int
	// Corrupt counts damaged regions skipped in the middle of the data.
	Corrupt int
	// SkippedBytes is the number of bytes not part of a valid record.
	SkippedBytes int
	// TornTail reports that the data ends inside a record.
	TornTail bool
}

// ScanSegment walks the records in b in order and calls fn for each valid
// one. A damaged record (bad magic, checksum, length or body) is skipped by
// resynchronising on the next offset that holds a valid record; a record cut
// short at the end of b is a torn tail and ends the scan. It never panics on
// any input (fuzzed by FuzzScanSegment).
func ScanSegment(b []byte, maxBody int, fn func(off int, r Record)) ScanResult {
	var res ScanResult
	off := 0
	inCorrupt := false
	for off < len(b) {
		r, n, err := ParseRecord(b[off:], maxBody)
		if err == nil {
			fn(off, r)
			res.Records++
			off += n
			inCorrupt = false
			continue
		}
		if err == ErrShort && !inCorrupt && !validAhead(b[off+1:], maxBody) {
			res.TornTail = true
			res.SkippedBytes += len(b) - off
			return res
		}
		if !inCorrupt {
			res.Corrupt++
			inCorrupt = true
		}
		res.SkippedBytes++
		off++
	}
	return res
}

// validAhead reports whether any valid record starts somewhere in b. It tells
// a torn tail (nothing valid follows) from a corrupted length field in the
// middle of the data (valid records follow). Only offsets holding the magic
// byte are tried, so the cost is one CRC per candidate.
func validAhead(b []byte, maxBody int) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != recordMagic {
			continue
		}
		if _, _, err := ParseRecord(b[i:], maxBody); err == nil {
			return true
		}
	}
	return false
}
