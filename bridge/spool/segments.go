// Segment files of the log: naming, creation and rotation, record writes,
// the disk-space reserve, head deletion and compaction.

package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type segment struct {
	id   uint64
	path string
	size int64
	live int
}

func segmentName(id uint64) string {
	return fmt.Sprintf("%s%0*x%s", segmentPrefix, segmentNameWidth, id, segmentSuffix)
}

func parseSegmentName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) {
		return 0, false
	}
	hex := strings.TrimSuffix(strings.TrimPrefix(name, segmentPrefix), segmentSuffix)
	if len(hex) != segmentNameWidth {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	return id, err == nil
}

// newSegmentLocked closes the active segment (after an fsync) and starts a
// new one. s.mu must be held.
func (s *Spool) newSegmentLocked() error {
	var id uint64 = 1
	if n := len(s.segs); n > 0 {
		id = s.segs[n-1].id + 1
	}
	if s.active != nil {
		s.stats.Syncs.Add(1)
		if err := s.active.Sync(); err != nil {
			s.stats.WriteErrors.Add(1)
			return fmt.Errorf("%w: %v", ErrWrite, err)
		}
		s.syncedGen.Store(s.writeGen)
		_ = s.active.Close()
		s.active = nil
	}
	path := filepath.Join(s.cfg.Dir, segmentName(id))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.stats.WriteErrors.Add(1)
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		s.stats.WriteErrors.Add(1)
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	sg := &segment{id: id, path: path}
	s.segs = append(s.segs, sg)
	s.active, s.activeSg = f, sg
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// appendRecordLocked writes one record to the active segment, rotating
// first if it is full. On a failed write the partial record is truncated
// away so the segment stays parseable. s.mu must be held.
func (s *Spool) appendRecordLocked(r Record, allowRotate bool) error {
	var err error
	s.buf, err = AppendRecord(s.buf[:0], r)
	if err != nil {
		return err
	}
	if allowRotate && s.activeSg.size > 0 && s.activeSg.size+int64(len(s.buf)) > s.cfg.SegmentBytes {
		if err := s.newSegmentLocked(); err != nil {
			return err
		}
		s.maybeCompactLocked()
	}
	n, err := s.write(s.active, s.buf)
	if err != nil {
		s.stats.WriteErrors.Add(1)
		if n > 0 {
			_ = s.active.Truncate(s.activeSg.size)
		}
		s.log.Error("spool write failed", "err", err)
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	s.activeSg.size += int64(n)
	s.stats.DiskBytes.Add(int64(n))
	s.writeGen++
	return nil
}

// ensureSpaceLocked checks that the filesystem keeps room for a record of
// size bytes plus the records every queued message still needs (see the
// package comment). When it does not, it starts a new segment (unless the
// active one is empty) so that the old one can be deleted as soon as its
// messages are resolved, at once if they all are, and checks again. s.mu
// must be held.
func (s *Spool) ensureSpaceLocked(size int64) error {
	need := size + (s.stats.Queued.Load()+1)*resolveReserve + spaceSlack
	free, err := s.freeSpace(s.cfg.Dir)
	if err != nil {
		return nil // cannot tell: the write itself decides
	}
	if free < need && s.activeSg != nil && s.activeSg.size > 0 {
		if err := s.newSegmentLocked(); err == nil {
			s.dropDeadHeadLocked()
			if f, err := s.freeSpace(s.cfg.Dir); err == nil {
				free = f
			}
		}
	}
	if free >= need {
		if s.lowSpace {
			s.lowSpace = false
			s.log.Info("spool: disk space available again", "free_bytes", free)
		}
		return nil
	}
	s.stats.RefusedDisk.Add(1)
	if !s.lowSpace {
		s.lowSpace = true
		s.log.Error("spool: disk full, refusing new messages", "free_bytes", free, "needed_bytes", need, "queued", s.stats.Queued.Load())
	}
	return fmt.Errorf("%w: %w: %d bytes free, %d needed", ErrWrite, ErrDiskFull, free, need)
}

// dropDeadHeadLocked deletes segments at the head of the log whose messages
// are all resolved. Only the head may go: a later segment can hold Acks for
// messages of an earlier one.
func (s *Spool) dropDeadHeadLocked() {
	for len(s.segs) > 0 && s.segs[0] != s.activeSg && s.segs[0].live <= 0 {
		sg := s.segs[0]
		if err := os.Remove(sg.path); err != nil && !os.IsNotExist(err) {
			s.log.Warn("spool: removing segment failed", "segment", filepath.Base(sg.path), "err", err)
			return
		}
		s.stats.DiskBytes.Add(-sg.size)
		s.segs = s.segs[1:]
	}
}

// maybeCompactLocked copies the live messages of the oldest segment into the
// active one and removes it, when the files hold more than twice MaxBytes.
func (s *Spool) maybeCompactLocked() {
	if len(s.segs) < 2 || s.stats.DiskBytes.Load() <= 2*s.cfg.MaxBytes {
		return
	}
	head := s.segs[0]
	var move []*entry
	for _, e := range s.bySeq {
		if e.seg == head {
			move = append(move, e)
		}
	}
	sort.Slice(move, func(i, j int) bool { return move[i].msg.Seq < move[j].msg.Seq })
	for _, e := range move {
		if err := s.appendRecordLocked(Record{Type: RecordPut, Msg: e.msg}, false); err != nil {
			return // the head stays; the copies are harmless duplicates
		}
		if e.msg.Stage != 0 {
			if err := s.appendRecordLocked(Record{Type: RecordBind, Seq: e.msg.Seq, PacketID: e.msg.PacketID, Stage: e.msg.Stage}, false); err != nil {
				return
			}
		}
	}
	s.stats.Syncs.Add(1)
	if err := s.active.Sync(); err != nil {
		s.stats.WriteErrors.Add(1)
		return
	}
	s.syncedGen.Store(s.writeGen)
	for _, e := range move {
		e.seg.live--
		e.seg = s.activeSg
		e.seg.live++
	}
	s.stats.Compactions.Add(1)
	s.dropDeadHeadLocked()
}
