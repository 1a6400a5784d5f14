package spool

import (
	"encoding/binary"
	"path/filepath"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkEngines compares the spool's write-ahead log with bbolt (already
// a dependency: the MQTT session store) on the spool's hot path: a QoS 1
// message made durable before the device gets its PUBACK, then acked when
// central has it. The same encoded record (AppendRecord, 64-byte payload)
// goes to both.
//
//   - wal/serial, wal/64-writers: Append (fsync; group commit when many
//     writers wait) + Ack, as the bridge does;
//   - bbolt/serial: one Update (a commit: fsync) per message and one per
//     ack, what a straight port would do;
//   - bbolt/64-writers-batch: db.Batch from 64 goroutines, which coalesces
//     concurrent calls into one transaction (one fsync per batch).
//
// Run it (issue 25's "one storage engine?" figures, bridge/spool):
//
//	go test -run '^$' -bench BenchmarkEngines -benchtime 2000x ./bridge/spool
func BenchmarkEngines(b *testing.B) {
	payload := make([]byte, 64)
	msg := Message{Endpoint: "sensor-1", Topic: "telemetry/t", QoS: 1, Payload: payload}
	b.Run("wal/serial", func(b *testing.B) { benchWAL(b, msg, 1) })
	b.Run("wal/64-writers", func(b *testing.B) { benchWAL(b, msg, 64) })
	b.Run("bbolt/serial", func(b *testing.B) { benchBolt(b, msg, 1) })
	b.Run("bbolt/64-writers-batch", func(b *testing.B) { benchBolt(b, msg, 64) })
}

func benchWAL(b *testing.B, msg Message, writers int) {
	s, err := Open(Config{Dir: b.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	op := func() error {
		seq, err := s.Append(msg)
		if err != nil {
			return err
		}
		return s.Ack(msg.Endpoint, seq)
	}
	b.SetBytes(int64(len(msg.Payload)))
	b.ResetTimer()
	runOps(b, writers, op)
	b.ReportMetric(float64(s.Stats().Syncs.Load())/float64(b.N), "fsyncs/op")
}

func benchBolt(b *testing.B, msg Message, writers int) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "spool.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	bucket := []byte(msg.Endpoint)
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
		b.Fatal(err)
	}
	commit := db.Update
	if writers > 1 {
		commit = db.Batch
	}
	var seq atomic.Uint64
	op := func() error {
		m := msg
		m.Seq = seq.Add(1)
		rec, err := AppendRecord(nil, Record{Type: RecordPut, Msg: m})
		if err != nil {
			return err
		}
		key := binary.BigEndian.AppendUint64(nil, m.Seq)
		if err := commit(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, rec) }); err != nil {
			return err
		}
		return commit(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(key) })
	}
	b.SetBytes(int64(len(msg.Payload)))
	b.ResetTimer()
	runOps(b, writers, op)
	st := db.Stats()
	b.ReportMetric(float64(st.TxStats.GetWrite())/float64(b.N), "page-writes/op")
}

// runOps calls op b.N times from writers goroutines (1: this one).
func runOps(b *testing.B, writers int, op func() error) {
	if writers == 1 {
		for range b.N {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(writers)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
