package report

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 100; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	check := func(name string, got, want time.Duration) {
		t.Helper()
		// buckets are 4% wide
		if got < want || float64(got) > float64(want)*1.05 {
			t.Errorf("%s: got %v, want %v (+5%%)", name, got, want)
		}
	}
	check("p50", h.Quantile(0.5), 50*time.Millisecond)
	check("p99", h.Quantile(0.99), 99*time.Millisecond)
	if got := h.Quantile(1); got != 100*time.Millisecond {
		t.Errorf("p100: got %v, want max 100ms", got)
	}
	if h.Count() != 100 {
		t.Errorf("count: got %d, want 100", h.Count())
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 {
		t.Error("empty histogram: want 0")
	}
}

func TestStatsAdd(t *testing.T) {
	var a, b, tot Stats
	a.Sent.Add(3)
	a.Acked.Add(2)
	a.Latency.Observe(time.Millisecond)
	b.Sent.Add(4)
	b.Connected.Store(1)
	b.Latency.Observe(3 * time.Millisecond)
	tot.Add(&a)
	tot.Add(&b)
	c := CountersOf(&tot)
	if c.Sent != 7 || c.Acked != 2 || c.Connected != 1 || c.Latency.Count != 2 || c.Latency.MaxMs != 3 {
		t.Errorf("got %+v", c)
	}
}

func TestLost(t *testing.T) {
	if got := Lost(10, 7, nil); got != 3 {
		t.Errorf("acks only: got %d, want 3", got)
	}
	if got := Lost(10, 7, &SeqStats{Unique: 9}); got != 1 {
		t.Errorf("collector: got %d, want 1", got)
	}
	if got := Lost(10, 7, &SeqStats{Unique: 11}); got != 0 {
		t.Errorf("collector above sent: got %d, want 0", got)
	}
}

func TestLivePlain(t *testing.T) {
	var buf bytes.Buffer
	l := NewLive(&buf)
	l.Print(Line{Elapsed: 3 * time.Second, Devices: 5, Totals: Counters{Connected: 4, Sent: 10, Acked: 9}, Collected: &SeqStats{Unique: 8}})
	got := buf.String()
	if strings.Contains(got, "\x1b") || !strings.Contains(got, "connected=4/5") || !strings.Contains(got, "lost=2") {
		t.Errorf("got %q", got)
	}
}

func TestLiveTerminal(t *testing.T) {
	var buf bytes.Buffer
	l := &Live{out: &buf, term: true}
	l.Print(Line{Elapsed: 2 * time.Second, Devices: 3, Totals: Counters{Connected: 3, Sent: 6, Acked: 6},
		Groups: []GroupLine{{Name: "coap-psk", Protocol: "coap", Devices: 3, Totals: Counters{Connected: 3, Sent: 6, Acked: 6}}}})
	got := buf.String()
	for _, want := range []string{"\x1b[H\x1b[2J", "devices connected   3 / 3", "6 sent, 6 acknowledged", "coap-psk", "   3/3   "} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal view lacks %q:\n%s", want, got)
		}
	}
}
