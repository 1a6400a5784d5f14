// Package spool is the bridge's on-disk store-and-forward queue: messages a
// device was told are delivered (MQTT PUBACK/PUBREC, CoAP ACK) wait here,
// ordered per endpoint, until the central side confirms them.
//
// # Format
//
// A segmented write-ahead log in Config.Dir: files seg-<16 hex>.log, each a
// sequence of checksummed records (see constants.go). A Put record stores a
// message; an Ack record resolves one. Messages are ordered by a global
// sequence number, so per-endpoint order is the order of Append calls.
// New writes always go to a fresh segment after Open, so a torn tail left
// by a crash is never appended to; recovery skips it (and any damaged
// region in the middle, resynchronising on the next valid record).
//
// # Fsync policy
//
//   - Append of a QoS 1/2 message returns only after the record is on disk
//     (fsync). Concurrent appenders share one fsync (group commit): while
//     one fsync runs, later appends queue behind it and the next fsync
//     covers them all. The broker sends PUBACK/PUBREC only after Append
//     returned, so an acknowledged message survives kill -9 and power loss.
//   - QoS 0 appends and Ack records are written (one write(2) each, so they
//     survive kill -9 of the process) but not fsynced on their own; they
//     reach the disk with the next fsync, rotation or Close. After a power
//     loss a lost Ack means the message is sent again (at-least-once), a
//     lost QoS 0 message is lost, as QoS 0 allows.
//   - New segment files are fsynced together with their directory.
//
// # Overflow policy
//
// Each endpoint has its own share of the spool, Config.EndpointMaxBytes
// (fair store-and-forward: one device flooding during an outage can only
// exhaust its own share). When an Append would exceed the endpoint's
// share, that endpoint's oldest QoS 0 messages are dropped first; if that
// is not enough the message is refused with ErrShareFull, an ErrFull
// (Stats.RefusedShare / DroppedShare). DropEndpoint drops a removed
// endpoint's messages.
//
// The live (unacknowledged) bytes are bounded by Config.MaxBytes. When an
// Append would exceed it, the oldest QoS 0 messages of any endpoint are
// dropped first (Stats.DroppedOverflow). If that is not enough, a new QoS 0
// message is dropped itself (ErrFull, DroppedOverflow) and a QoS 1/2 message
// is refused with ErrFull (Stats.RefusedFull): the broker answers the device
// with a failure reason (MQTT 5) or no acknowledgement (MQTT 3.1.1), so the
// device keeps the message and retries. A failed write (disk full) returns
// ErrWrite, the partial record is truncated away and Stats.WriteErrors
// counts it; the spool keeps running.
//
// A full disk must not stop the spool from recording deliveries: every
// queued message still needs its Bind and Ack records, and without room
// for them nothing could ever be removed and no space freed. Append
// therefore refuses a message (ErrWrite wrapping ErrDiskFull,
// Stats.RefusedDisk) unless the filesystem keeps room for the new record,
// resolveReserve bytes for each queued message and spaceSlack. When the
// room is short, a new segment is started first so that the old one is
// deleted as soon as all its messages are resolved (at once if they are).
//
// Disk use is bounded too: segments whose messages are all resolved are
// deleted from the head of the log; when the files hold more than twice
// MaxBytes, the oldest segment's live messages are copied to the active
// segment and the old segment is removed (compaction).
package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Config configures a Spool.
type Config struct {
	// Dir holds the segment files; created if missing.
	Dir string
	// MaxBytes bounds the live bytes (DefaultMaxBytes if zero).
	MaxBytes int64
	// EndpointMaxBytes bounds one endpoint's live bytes, its share of
	// MaxBytes (MaxBytes / DefaultEndpointShareDivisor, at least 1 MiB,
	// if zero; at most MaxBytes): one device flooding during an outage
	// fills only its own share.
	EndpointMaxBytes int64
	// SegmentBytes is the rotation size (DefaultSegmentBytes if zero).
	SegmentBytes int64
	// MaxRecordBody bounds one record (DefaultMaxRecordBody if zero).
	MaxRecordBody int
	// Clock stamps enqueue times (clock.System if nil).
	Clock clock.Clock
	// Logger receives lifecycle and recovery lines (discarded if nil).
	Logger *slog.Logger
}

type entry struct {
	msg  Message
	size int64
	seg  *segment
}

// Spool is the store-and-forward queue. All methods are safe for concurrent
// use.
type Spool struct {
	cfg   Config
	log   *slog.Logger
	stats Stats

	syncMu    sync.Mutex    // serialises fsync; taken before mu, never inside it
	syncedGen atomic.Uint64 // highest write generation known durable

	// Owned by mu.
	mu       sync.Mutex
	closed   bool
	queues   map[string][]*entry
	epBytes  map[string]int64 // live bytes per endpoint
	bySeq    map[uint64]*entry
	qos0     []*entry // QoS 0 entries in seq order, dropped ones removed lazily
	qos0Dead int      // resolved entries still in qos0 (compacted when half are)
	segs     []*segment
	active   *os.File
	activeSg *segment
	nextSeq  uint64
	writeGen uint64
	notify   map[string]chan struct{}
	buf      []byte
	recent   map[string]*recentIDs // device QoS 2 ids per endpoint

	// write is the file write used for records; tests replace it to
	// simulate a full disk.
	write func(f *os.File, b []byte) (int, error)
	// freeSpace returns the bytes available to us on dir's filesystem.
	freeSpace func(dir string) (int64, error)
	lowSpace  bool // last Append was refused for disk space (log once)
}

// Open opens (or creates) the spool in cfg.Dir and recovers its contents.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: empty Dir", ErrInvalid)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.EndpointMaxBytes <= 0 {
		cfg.EndpointMaxBytes = max(cfg.MaxBytes/DefaultEndpointShareDivisor, minEndpointShare)
	}
	cfg.EndpointMaxBytes = min(cfg.EndpointMaxBytes, cfg.MaxBytes)
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	if cfg.MaxRecordBody <= 0 {
		cfg.MaxRecordBody = DefaultMaxRecordBody
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{
		cfg:     cfg,
		log:     lg.With("component", "spool"),
		queues:  make(map[string][]*entry),
		epBytes: make(map[string]int64),
		bySeq:   make(map[uint64]*entry),
		notify:  make(map[string]chan struct{}),
		recent:  make(map[string]*recentIDs),
		write:   func(f *os.File, b []byte) (int, error) { return f.Write(b) },
		freeSpace: func(dir string) (int64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(dir, &st); err != nil {
				return 0, err
			}
			return int64(st.Bavail) * int64(st.Bsize), nil
		},
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	if s.nextSeq == 0 {
		s.nextSeq = 1 // seq 0 is "before the first message" for Pending
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.newSegmentLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// Stats returns the spool's counters.
func (s *Spool) Stats() *Stats { return &s.stats }

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.cfg.Dir }

// Append queues m (Seq and Enqueued are assigned) and returns its sequence
// number. For QoS 1/2 it returns after the record is durable (see the
// package comment for the fsync and overflow policies).
func (s *Spool) Append(m Message) (uint64, error) {
	if m.Endpoint == "" || len(m.Endpoint) > maxEndpointLen || len(m.Topic) > maxTopicLen || m.QoS > 2 {
		return 0, ErrInvalid
	}
	r := Record{Type: RecordPut, Msg: m}
	size := int64(r.encodedLen())
	if size-recordHeaderLen > int64(s.cfg.MaxRecordBody) {
		return 0, fmt.Errorf("%w: %d bytes", ErrInvalid, size)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	if m.QoS == 2 && m.Dup && m.DevicePacketID != 0 && s.seenLocked(&m) {
		s.mu.Unlock()
		s.stats.Duplicates.Add(1)
		return 0, ErrDuplicate
	}
	// The endpoint's own share first (unless it is the whole spool): a
	// flooding endpoint is refused before it can push out anyone else's
	// QoS 0 messages.
	shared := s.cfg.EndpointMaxBytes < s.cfg.MaxBytes
	for shared && s.epBytes[m.Endpoint]+size > s.cfg.EndpointMaxBytes {
		if !s.dropOldestQoS0Locked(m.Endpoint) {
			break
		}
	}
	if shared && s.epBytes[m.Endpoint]+size > s.cfg.EndpointMaxBytes {
		s.mu.Unlock()
		if m.QoS == 0 {
			s.stats.DroppedShare.Add(1)
		} else {
			s.stats.RefusedShare.Add(1)
		}
		return 0, ErrShareFull
	}
	for s.stats.Bytes.Load()+size > s.cfg.MaxBytes {
		if !s.dropOldestQoS0Locked("") {
			break
		}
	}
	if s.stats.Bytes.Load()+size > s.cfg.MaxBytes {
		s.mu.Unlock()
		if m.QoS == 0 {
			s.stats.DroppedOverflow.Add(1)
		} else {
			s.stats.RefusedFull.Add(1)
		}
		return 0, ErrFull
	}
	if err := s.ensureSpaceLocked(size); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	r.Msg.Seq = s.nextSeq
	r.Msg.Enqueued = s.cfg.Clock.Now()
	if err := s.appendRecordLocked(r, true); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	s.nextSeq++
	s.rememberLocked(&r.Msg)
	e := &entry{msg: r.Msg, size: size, seg: s.activeSg}
	e.seg.live++
	s.bySeq[e.msg.Seq] = e
	s.queues[m.Endpoint] = append(s.queues[m.Endpoint], e)
	if m.QoS == 0 {
		s.qos0 = append(s.qos0, e)
	}
	s.stats.Queued.Add(1)
	s.stats.Bytes.Add(size)
	s.epBytes[m.Endpoint] += size
	s.stats.Appended.Add(1)
	if ch, ok := s.notify[m.Endpoint]; ok {
		close(ch)
		delete(s.notify, m.Endpoint)
	}
	gen := s.writeGen
	seq := e.msg.Seq
	s.mu.Unlock()
	if m.QoS > 0 {
		if err := s.syncTo(gen); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// syncTo makes every write up to generation gen durable. Callers queue on
// syncMu; the first fsync after a caller's write covers every write made
// before it started (group commit).
func (s *Spool) syncTo(gen uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncedGen.Load() >= gen {
		return nil
	}
	s.mu.Lock()
	f, target := s.active, s.writeGen
	s.mu.Unlock()
	if f == nil {
		return ErrClosed
	}
	s.stats.Syncs.Add(1)
	if err := f.Sync(); err != nil {
		if errors.Is(err, os.ErrClosed) && s.syncedGen.Load() >= gen {
			return nil // rotated or closed meanwhile: that path synced it
		}
		s.stats.WriteErrors.Add(1)
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	if target > s.syncedGen.Load() {
		s.syncedGen.Store(target)
	}
	return nil
}

// dropOldestQoS0Locked drops the oldest live QoS 0 message of endpoint
// (of any endpoint if empty).
func (s *Spool) dropOldestQoS0Locked(endpoint string) bool {
	if endpoint != "" {
		for _, e := range s.queues[endpoint] {
			if e.msg.QoS == 0 {
				if err := s.resolveLocked(e, AckDroppedOverflow); err != nil {
					return false
				}
				s.stats.DroppedOverflow.Add(1)
				return true
			}
		}
		return false
	}
	for len(s.qos0) > 0 {
		e := s.qos0[0]
		s.qos0[0] = nil
		s.qos0 = s.qos0[1:]
		if _, live := s.bySeq[e.msg.Seq]; !live {
			s.qos0Dead--
			continue
		}
		s.qos0Dead-- // resolveLocked counts it as left behind in qos0; it is not
		if err := s.resolveLocked(e, AckDroppedOverflow); err != nil {
			return false
		}
		s.stats.DroppedOverflow.Add(1)
		return true
	}
	return false
}

// Bind records that message seq of endpoint was handed to the upstream MQTT
// session with packet identifier pid at stage 1 (PUBLISH) or 2 (PUBREL).
// With sync it returns after the record is durable (needed for QoS 2, so a
// restart resumes the same packet identifier instead of publishing anew).
func (s *Spool) Bind(endpoint string, seq uint64, pid uint16, stage uint8, sync bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	e, ok := s.bySeq[seq]
	if !ok || e.msg.Endpoint != endpoint {
		s.mu.Unlock()
		return nil
	}
	if err := s.appendRecordLocked(Record{Type: RecordBind, Seq: seq, PacketID: pid, Stage: stage}, true); err != nil {
		s.mu.Unlock()
		return err
	}
	e.msg.PacketID, e.msg.Stage = pid, stage
	gen := s.writeGen
	s.mu.Unlock()
	if sync {
		return s.syncTo(gen)
	}
	return nil
}

// Ack resolves a delivered message of endpoint. Acking an unknown or already
// acknowledged seq is a no-op (replays after a restart may ack twice).
func (s *Spool) Ack(endpoint string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	e, ok := s.bySeq[seq]
	if !ok || e.msg.Endpoint != endpoint {
		return nil
	}
	if err := s.resolveLocked(e, AckDelivered); err != nil {
		return err
	}
	s.stats.Delivered.Add(1)
	return nil
}

func (s *Spool) resolveLocked(e *entry, why AckReason) error {
	if err := s.appendRecordLocked(Record{Type: RecordAck, Seq: e.msg.Seq, Reason: why}, true); err != nil {
		return err
	}
	delete(s.bySeq, e.msg.Seq)
	q := s.queues[e.msg.Endpoint]
	i := sort.Search(len(q), func(i int) bool { return q[i].msg.Seq >= e.msg.Seq })
	if i < len(q) && q[i] == e {
		if i == 0 {
			q = q[1:]
		} else {
			q = append(q[:i], q[i+1:]...)
		}
	}
	if len(q) == 0 {
		delete(s.queues, e.msg.Endpoint)
	} else {
		s.queues[e.msg.Endpoint] = q
	}
	if e.msg.QoS == 0 {
		s.qos0Dead++
		s.compactQoS0Locked()
	}
	e.seg.live--
	s.stats.Queued.Add(-1)
	s.stats.Bytes.Add(-e.size)
	if b := s.epBytes[e.msg.Endpoint] - e.size; b > 0 {
		s.epBytes[e.msg.Endpoint] = b
	} else {
		delete(s.epBytes, e.msg.Endpoint)
	}
	s.dropDeadHeadLocked()
	e.msg.Payload = nil // a resolved entry may linger in qos0 until compaction; its payload need not (Pending handed out copies)
	return nil
}

// compactQoS0Locked drops resolved entries from qos0 once they are half of
// it. Without it every delivered QoS 0 message (payload included) stayed
// referenced from qos0 until an overflow scan reached it: a device's
// QoS 0 traffic held memory for good while the uplink was up (issue 18:
// 600 × 200 KB through the real bridge peaked at +300 MB RSS).
func (s *Spool) compactQoS0Locked() {
	if s.qos0Dead < 64 || s.qos0Dead*2 < len(s.qos0) {
		return
	}
	live := s.qos0[:0]
	for _, e := range s.qos0 {
		if _, ok := s.bySeq[e.msg.Seq]; ok {
			live = append(live, e)
		}
	}
	clear(s.qos0[len(live):])
	s.qos0, s.qos0Dead = live, 0
}

// DropEndpoint drops every queued message of endpoint (it was removed:
// nothing of it is sent any more) and returns how many. The Ack records
// are written but not fsynced: after a power loss a dropped message may
// come back, and the caller's check that the endpoint exists drops it
// again.
func (s *Spool) DropEndpoint(endpoint string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	q := append([]*entry(nil), s.queues[endpoint]...)
	for i, e := range q {
		if err := s.resolveLocked(e, AckDroppedRemoved); err != nil {
			return i, err
		}
		s.stats.DroppedRemoved.Add(1)
	}
	delete(s.recent, endpoint)
	return len(q), nil
}

// EndpointMaxBytes returns one endpoint's share of the spool.
func (s *Spool) EndpointMaxBytes() int64 { return s.cfg.EndpointMaxBytes }

// Close syncs and closes the spool; waiters are woken.
func (s *Spool) Close() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for ep, ch := range s.notify {
		close(ch)
		delete(s.notify, ep)
	}
	if s.active == nil {
		return nil
	}
	s.stats.Syncs.Add(1)
	err := s.active.Sync()
	s.syncedGen.Store(s.writeGen)
	if cerr := s.active.Close(); err == nil {
		err = cerr
	}
	s.active = nil
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// abandon closes the files without syncing or writing anything more, as a
// crash would leave them (tests only).
func (s *Spool) abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.active != nil {
		_ = s.active.Close()
		s.active = nil
	}
}
