package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// recover reads every segment in order and rebuilds the live set.
func (s *Spool) recover() error {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var ids []uint64
	for _, de := range des {
		if id, ok := parseSegmentName(de.Name()); ok && de.Type().IsRegular() {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		path := filepath.Join(s.cfg.Dir, segmentName(id))
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		sg := &segment{id: id, path: path, size: int64(len(data))}
		s.segs = append(s.segs, sg)
		s.stats.DiskBytes.Add(sg.size)
		res := ScanSegment(data, s.cfg.MaxRecordBody, func(_ int, r Record) { s.applyRecovered(sg, r) })
		if res.Corrupt > 0 || res.TornTail {
			s.log.Warn("spool segment damaged, skipped bad bytes", "segment", filepath.Base(path),
				"records", res.Records, "corrupt_regions", res.Corrupt, "torn_tail", res.TornTail, "skipped_bytes", res.SkippedBytes)
		}
		s.stats.CorruptRegions.Add(uint64(res.Corrupt))
		s.stats.SkippedBytes.Add(uint64(res.SkippedBytes))
		if res.TornTail {
			s.stats.TornTails.Add(1)
		}
	}
	// Rebuild the per-endpoint queues and the QoS 0 list in seq order.
	all := make([]*entry, 0, len(s.bySeq))
	for _, e := range s.bySeq {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].msg.Seq < all[j].msg.Seq })
	for _, e := range all {
		s.queues[e.msg.Endpoint] = append(s.queues[e.msg.Endpoint], e)
		if e.msg.QoS == 0 {
			s.qos0 = append(s.qos0, e)
		}
		s.stats.Queued.Add(1)
		s.stats.Bytes.Add(e.size)
		s.epBytes[e.msg.Endpoint] += e.size
	}
	s.stats.Recovered.Store(uint64(len(all)))
	if len(all) > 0 || len(ids) > 0 {
		s.log.Info("spool recovered", "segments", len(ids), "messages", len(all), "bytes", s.stats.Bytes.Load())
	}
	s.mu.Lock()
	s.dropDeadHeadLocked()
	s.mu.Unlock()
	return nil
}

func (s *Spool) applyRecovered(sg *segment, r Record) {
	if r.Seq >= s.nextSeq {
		s.nextSeq = r.Seq + 1
	}
	switch r.Type {
	case RecordPut:
		if old, ok := s.bySeq[r.Seq]; ok { // copied by compaction
			old.seg.live--
			old.seg = sg
			sg.live++
			return
		}
		rr := r
		s.rememberLocked(&rr.Msg)
		e := &entry{msg: rr.Msg, size: int64(rr.encodedLen()), seg: sg}
		s.bySeq[r.Seq] = e
		sg.live++
	case RecordAck:
		if e, ok := s.bySeq[r.Seq]; ok {
			e.seg.live--
			delete(s.bySeq, r.Seq)
		}
	case RecordBind:
		if e, ok := s.bySeq[r.Seq]; ok {
			e.msg.PacketID, e.msg.Stage = r.PacketID, r.Stage
		}
	}
}
