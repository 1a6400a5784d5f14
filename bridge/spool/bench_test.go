package spool

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures Append: QoS 0 (written, not synced), QoS 1 from
// one goroutine (one fsync each) and from 64 goroutines (group commit).
//
//	go test -run '^$' -bench . -benchtime 2000x ./bridge/spool
func BenchmarkAppend(b *testing.B) {
	payload := make([]byte, 64)
	for _, tc := range []struct {
		name     string
		qos      byte
		parallel int
	}{{"qos0", 0, 1}, {"qos1-serial", 1, 1}, {"qos1-64-writers", 1, 64}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(Config{Dir: b.TempDir(), MaxBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetBytes(int64(len(payload)))
			b.SetParallelism(tc.parallel)
			b.ResetTimer()
			if tc.parallel == 1 {
				for i := 0; i < b.N; i++ {
					if _, err := s.Append(Message{Endpoint: "sensor-1", Topic: "telemetry/t", QoS: tc.qos, Payload: payload}); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.Append(Message{Endpoint: "sensor-1", Topic: "telemetry/t", QoS: tc.qos, Payload: payload}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(s.Stats().Syncs.Load())/float64(b.N), "fsyncs/op")
		})
	}
}

// BenchmarkReplay measures draining a backlog: Pending in batches of 32 and
// Ack per message, across 100 endpoints, then recovery (Open) of a spool
// holding b.N messages.
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(Config{Dir: dir, MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 64)
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(Message{Endpoint: fmt.Sprintf("sensor-%d", i%100), Topic: "telemetry/t", QoS: 0, Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
	_ = s.Close()
	b.ResetTimer()
	s, err = Open(Config{Dir: dir, MaxBytes: 1 << 30}) // recovery
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if got := s.Stats().Recovered.Load(); got != uint64(b.N) {
		b.Fatalf("recovered %d of %d", got, b.N)
	}
	n := 0
	for _, ep := range s.Endpoints() {
		for {
			ms := s.Pending(ep, 0, 32)
			if len(ms) == 0 {
				break
			}
			for _, m := range ms {
				if err := s.Ack(ep, m.Seq); err != nil {
					b.Fatal(err)
				}
				n++
			}
		}
	}
	if n != b.N {
		b.Fatalf("replayed %d of %d", n, b.N)
	}
}
