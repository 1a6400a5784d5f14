package collector

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

func TestRecordSequence(t *testing.T) {
	c := New(Config{})
	// 1 2 4 3 4 7 → dup 4, reordered 3, gaps 5,6
	for _, s := range []uint64{1, 2, 4, 3, 4, 7} {
		if _, err := c.Record("d", s); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := c.Device("d")
	want := report.SeqStats{Received: 6, Unique: 5, Duplicates: 1, Reordered: 1, Gaps: 2, Highest: 7}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if !c.Has("d", 3) || c.Has("d", 5) || c.Has("x", 1) {
		t.Error("Has disagrees with what was recorded")
	}
	if _, err := c.Record("d", 0); !errors.Is(err, ErrSeqRange) {
		t.Errorf("seq 0: got %v, want ErrSeqRange", err)
	}
	if _, err := c.Record("d", MaxSeq+1); !errors.Is(err, ErrSeqRange) {
		t.Errorf("seq too big: got %v, want ErrSeqRange", err)
	}
}

func TestHandleCountsMalformed(t *testing.T) {
	var samples []Sample
	c := New(Config{OnTelemetry: func(s Sample) { samples = append(samples, s) }})
	b, err := senml.Telemetry{Device: "sensor-3", Seq: 1, Time: time.Unix(1763900000, 0)}.Encode(senml.FormatCBOR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle("mqtt", "t", b, DetectFormat(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle("mqtt", "t", []byte("[garbage"), senml.FormatJSON); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, err := c.Handle("mqtt", "t", b, senml.FormatCBOR); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats.Malformed.Load(); got != 1 {
		t.Errorf("malformed: got %d, want 1", got)
	}
	if len(samples) != 2 || samples[0].Telemetry.Device != "sensor-3" || samples[0].Duplicate || !samples[1].Duplicate {
		t.Errorf("samples: got %+v", samples)
	}
	tot := c.Total()
	if tot.Received != 2 || tot.Unique != 1 || tot.Duplicates != 1 || tot.Malformed != 1 {
		t.Errorf("total: got %+v", tot)
	}
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest("GET", "/stats", nil))
	if !strings.Contains(rec.Body.String(), `"sensor-3":{"received":2`) {
		t.Errorf("status JSON: got %s", rec.Body.String())
	}
}

func TestDetectFormat(t *testing.T) {
	if DetectFormat([]byte(" \n[{}]")) != senml.FormatJSON || DetectFormat([]byte{0x81}) != senml.FormatCBOR {
		t.Error("format detection wrong")
	}
}
