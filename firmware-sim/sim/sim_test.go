package sim

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

type seqKey struct {
	dev string
	seq uint64
}

// results records every telemetry outcome the devices report.
type results struct {
	mu    sync.Mutex
	acked map[seqKey]int
	all   map[seqKey]bool
}

func newResults() *results {
	return &results{acked: map[seqKey]int{}, all: map[seqKey]bool{}}
}

func (r *results) note(dev string, seq uint64, acked bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := seqKey{dev, seq}
	r.all[k] = acked
	if acked {
		r.acked[k]++
	}
}

// startDTLSCollector serves the fleet's credentials on a loopback DTLS
// collector with CID.
func startDTLSCollector(t *testing.T, f *Fleet, col *collector.Collector) string {
	t.Helper()
	cfg := collector.DTLSConfig{Addr: "127.0.0.1:0", Creds: f.Creds(), CID: true}
	if ca := f.CA(); ca != nil {
		srv, err := ca.Issue("collector.test", "collector.test", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Cert, cfg.ClientCAs = srv, ca.Pool
	}
	l, err := collector.ListenDTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = col.ServeCoAPDTLS(ctx, l) }()
	t.Cleanup(func() { cancel(); _ = l.Close(); <-done })
	return l.Addr().String()
}

const lossyScenario = `
name: lossy
duration: 4s
seed: 7
target: {coap: "127.0.0.1:1", server_name: collector.test}
groups:
  - name: lossy-cid
    count: 4
    protocol: coap
    suite: ccm8
    cid: true
    format: cbor
    interval: 40ms
    faults: {loss_percent: 15}
    reconnect: {min: 50ms, max: 200ms}
  - name: lossy-cert-gcm
    count: 2
    protocol: coap
    auth: cert
    suite: gcm
    format: json
    interval: 40ms
    faults: {loss_percent: 15}
    reconnect: {min: 50ms, max: 200ms}
`

// TestLossyCountsAreTrue runs DTLS devices with 15% injected loss in each
// direction and CoAP confirmable retransmission against an in-process
// collector, and checks that the report's counts agree with what the
// collector really received, sequence number by sequence number.
func TestLossyCountsAreTrue(t *testing.T) {
	stacktest.CheckGoroutines(t)
	sc, err := scenario.Parse(strings.NewReader(lossyScenario))
	if err != nil {
		t.Fatal(err)
	}
	col := collector.New(collector.Config{})
	res := newResults()
	f, err := NewFleet(sc, Options{
		Collector: col, AckTimeout: 100 * time.Millisecond, MaxRetransmit: 4,
		Drain: 10 * time.Second, OnResult: res.note,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The collector needs the fleet's credentials and the fleet needs the
	// collector's port: build once for the credentials, then again with
	// the same credentials and the real target.
	addr := startDTLSCollector(t, f, col)
	f, err = NewFleet(sc, Options{
		Collector: col, AckTimeout: 100 * time.Millisecond, MaxRetransmit: 4,
		Drain: 10 * time.Second, OnResult: res.note, Creds: f.Creds(), CA: f.CA(), CoAPTarget: addr,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.LossSource != "collector" {
		t.Fatalf("loss source: got %q, want collector", rep.LossSource)
	}
	tot := rep.Totals
	if tot.Sent < 100 || tot.Acked == 0 {
		t.Fatalf("too little traffic: sent %d acked %d", tot.Sent, tot.Acked)
	}
	if tot.DroppedOut == 0 || tot.DroppedIn == 0 {
		t.Fatalf("no loss was injected: out %d in %d", tot.DroppedOut, tot.DroppedIn)
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if got := uint64(len(res.acked)); got != tot.Acked {
		t.Errorf("acked: report %d, distinct acked seqs %d", tot.Acked, got)
	}
	ackedButMissing, receivedUnacked := 0, 0
	for k, n := range res.acked {
		if n != 1 {
			t.Errorf("%s seq %d acked %d times", k.dev, k.seq, n)
		}
		if !col.Has(k.dev, k.seq) {
			ackedButMissing++
		}
	}
	for k, acked := range res.all {
		if !acked && col.Has(k.dev, k.seq) {
			receivedUnacked++
		}
	}
	if ackedButMissing != 0 {
		t.Errorf("%d acknowledged messages never reached the collector", ackedButMissing)
	}
	if got, want := rep.Collected.Unique, tot.Acked+uint64(receivedUnacked); got != want {
		t.Errorf("collector unique %d, want acked %d + received-but-unacked %d", got, tot.Acked, receivedUnacked)
	}
	var lost uint64
	for _, d := range rep.PerDevice {
		c := d.Collected
		if d.Sent != d.LastSeq {
			t.Errorf("%s: sent %d but last seq %d", d.Name, d.Sent, d.LastSeq)
		}
		if c.Gaps != c.Highest-c.Unique {
			t.Errorf("%s: gaps %d, want highest %d - unique %d", d.Name, c.Gaps, c.Highest, c.Unique)
		}
		if d.Lost != c.Gaps+(d.Sent-c.Highest) {
			t.Errorf("%s: lost %d, want gaps %d + tail %d", d.Name, d.Lost, c.Gaps, d.Sent-c.Highest)
		}
		lost += d.Lost
	}
	if lost != rep.Lost || rep.Lost != tot.Sent-rep.Collected.Unique {
		t.Errorf("lost: report %d, per-device sum %d, sent-unique %d", rep.Lost, lost, tot.Sent-rep.Collected.Unique)
	}
	t.Logf("sent %d acked %d unacked %d collector unique %d dup %d gaps %d lost %d received-unacked %d drops out/in %d/%d reconnects %d p50 %.1fms p99 %.1fms",
		tot.Sent, tot.Acked, tot.Unacked, rep.Collected.Unique, rep.Collected.Duplicates, rep.Collected.Gaps, rep.Lost, receivedUnacked,
		tot.DroppedOut, tot.DroppedIn, tot.Reconnects, tot.Latency.P50Ms, tot.Latency.P99Ms)
}
