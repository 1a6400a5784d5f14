package suite

import (
	"cmp"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/bridge/spool"
	bolt "go.etcd.io/bbolt"
)

// Spool sides: the bridge's write-ahead log and bbolt (already the MQTT
// session store) on the same workload.
const (
	spoolWALSerial  = "spool WAL, 1 writer (fsync per message)"
	spoolWAL64      = "spool WAL, 64 writers (group commit)"
	spoolBoltSerial = "bbolt, 1 writer (Update per message and per ack)"
	spoolBolt64     = "bbolt, 64 writers (db.Batch)"
)

// benchSpool answers issue 25's "one storage engine?": a QoS 1 message
// (64-byte payload) made durable before its PUBACK, then acked, on the
// spool's WAL and on bbolt with the same encoded record. bbolt keeps the
// spool only if it comes close (bridge/spool BenchmarkEngines measures
// the same in go test).
func benchSpool(o *Options, rep *Report) {
	const title = "Bridge spool: QoS 1 append (durable) + ack, 64-byte payload, WAL vs bbolt"
	names := []string{spoolWALSerial, spoolWAL64, spoolBoltSerial, spoolBolt64}
	runs := []func() (Sample, error){
		func() (Sample, error) { return spoolSide(o.Dur, 1, walOps) },
		func() (Sample, error) { return spoolSide(o.Dur, 64, walOps) },
		func() (Sample, error) { return spoolSide(o.Dur, 1, boltOps) },
		func() (Sample, error) { return spoolSide(o.Dur, 64, boltOps) },
	}
	rows := alternate(o.Reps, names, runs)
	rep.add(title, "msg/s", rows)
	rep.ratio(title, "spool WAL / bbolt, 1 writer", rows, spoolWALSerial, spoolBoltSerial, 0)
	rep.ratio(title, "spool WAL / bbolt, 64 writers", rows, spoolWAL64, spoolBolt64, 0)
}

var spoolMsg = spool.Message{Endpoint: "sensor-1", Topic: "telemetry/t", QoS: 1, Payload: make([]byte, 64)}

// walOps opens a spool in dir and returns its append+ack operation.
func walOps(dir string, writers int) (func() error, func(), error) {
	s, err := spool.Open(spool.Config{Dir: dir, MaxBytes: 1 << 30})
	if err != nil {
		return nil, nil, err
	}
	op := func() error {
		seq, err := s.Append(spoolMsg)
		if err != nil {
			return err
		}
		return s.Ack(spoolMsg.Endpoint, seq)
	}
	return op, func() { _ = s.Close() }, nil
}

// boltOps opens a bbolt file in dir and returns the same operation: put the
// encoded record under its sequence number, then delete it (Update per
// call with one writer, Batch with many).
func boltOps(dir string, writers int) (func() error, func(), error) {
	db, err := bolt.Open(filepath.Join(dir, "spool.db"), 0o600, nil)
	if err != nil {
		return nil, nil, err
	}
	bucket := []byte(spoolMsg.Endpoint)
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	commit := db.Update
	if writers > 1 {
		commit = db.Batch
	}
	var seq atomic.Uint64
	op := func() error {
		m := spoolMsg
		m.Seq = seq.Add(1)
		rec, err := spool.AppendRecord(nil, spool.Record{Type: spool.RecordPut, Msg: m})
		if err != nil {
			return err
		}
		key := binary.BigEndian.AppendUint64(nil, m.Seq)
		if err := commit(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, rec) }); err != nil {
			return err
		}
		return commit(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(key) })
	}
	return op, func() { _ = db.Close() }, nil
}

// spoolSide runs one sample: a fresh store in a temporary directory,
// writers goroutines calling its operation for dur.
func spoolSide(dur time.Duration, writers int, open func(dir string, writers int) (func() error, func(), error)) (Sample, error) {
	dir, err := os.MkdirTemp("", "fleetgate-bench-spool-")
	if err != nil {
		return Sample{}, err
	}
	defer os.RemoveAll(dir)
	op, closeFn, err := open(dir, writers)
	if err != nil {
		return Sample{}, err
	}
	defer closeFn()
	var (
		n        atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	start, cpu0 := time.Now(), cpuTime()
	deadline := start.Add(dur)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := op(); err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el, cpu := time.Since(start), cpuTime()-cpu0
	if firstErr != nil {
		return Sample{}, firstErr
	}
	ops := n.Load()
	if ops == 0 {
		return Sample{}, errors.New("no message completed in the sample")
	}
	return Sample{Rate: float64(ops) / el.Seconds(), CPUPerOp: cpu / time.Duration(ops)}, nil
}
