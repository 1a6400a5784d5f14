package suite

import (
	"bytes"
	"flag"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/benchmarks.golden.md")

func TestMedian(t *testing.T) {
	odd := []Sample{{Rate: 3, CPUPerOp: 30}, {Rate: 1, CPUPerOp: 10}, {Rate: 2, CPUPerOp: 20}}
	if m := median(odd); m.Rate != 2 || m.CPUPerOp != 20 {
		t.Errorf("median of 3 = %+v, want rate 2, CPU 20", m)
	}
	even := []Sample{{Rate: 4, Loss: 0.4}, {Rate: 1, Loss: 0.1}, {Rate: 2, Loss: 0.2}, {Rate: 3, Loss: 0.3}}
	if m := median(even); m.Rate != 2.5 || m.Loss != 0.25 {
		t.Errorf("median of 4 = %+v, want rate 2.5, loss 0.25", m)
	}
	if m := median(nil); m != (Sample{}) {
		t.Errorf("median of none = %+v, want zero", m)
	}
}

func rows3() []Row {
	return []Row{
		{Name: "ours", Median: Sample{Rate: 900, CPUPerOp: 2 * time.Microsecond}},
		{Name: "ceiling", Median: Sample{Rate: 1000, CPUPerOp: time.Microsecond}},
		{Name: "theirs", Median: Sample{Rate: 300, CPUPerOp: 8 * time.Microsecond}},
		{Name: "broken", Err: "dial: timeout"},
	}
}

func TestComputeRatio(t *testing.T) {
	rs := rows3()
	r := computeRatio("ours/theirs", rs, "ours", "theirs", 2, false)
	if r.absent || r.value != 3 || !r.ok || r.cpu != 4 {
		t.Errorf("ours/theirs = %+v, want 3.00 met, CPU ratio 4", r)
	}
	r = computeRatio("ours/ceiling", rs, "ours", "ceiling", 0.95, true)
	if r.value != 0.9 || r.ok || r.cpu != 0.5 || !r.ceiling {
		t.Errorf("ours/ceiling = %+v, want 0.90 missed, CPU ratio 0.5", r)
	}
	if r := computeRatio("x", rs, "ours", "broken", 1, false); !r.absent {
		t.Errorf("against a failed side: %+v, want absent", r)
	}
	if r := computeRatio("x", rs, "ours", "nobody", 1, false); !r.absent {
		t.Errorf("against a missing side: %+v, want absent", r)
	}
	noCPU := []Row{{Name: "a", Median: Sample{Rate: 2}}, {Name: "b", Median: Sample{Rate: 1, CPUPerOp: 5}}}
	if r := computeRatio("a/b", noCPU, "a", "b", 0, false); r.cpu != 0 || !r.ok {
		t.Errorf("no CPU on one side: %+v, want cpu 0 and ok (no goal)", r)
	}
	d := computeRatio("ours/theirs", rs, "ours", "theirs", 2, false).describe()
	if d != "ours/theirs: 3.00 (goal >= 2.00: met); CPU per op, right side ÷ left side: 4.00" {
		t.Errorf("describe = %q", d)
	}
}

// TestCeilingBug: a side faster than its ceiling is recorded as a bench
// bug (the command then exits 1 and writes nothing); below it is not.
func TestCeilingBug(t *testing.T) {
	var out bytes.Buffer
	rep := &Report{out: &out}
	rs := rows3()
	rep.add("g", "pkts/s", rs)
	rep.ceilingRatio("g", "ours / ceiling", rs, "ours", "ceiling", 0.8)
	if len(rep.bugs) != 0 {
		t.Fatalf("0.90 against a ceiling flagged: %q", rep.bugs)
	}
	rep.ceilingRatio("g", "ceiling / ours", rs, "ceiling", "ours", 0.8)
	if len(rep.bugs) != 1 || !strings.Contains(rep.bugs[0], "1.11 > 1.0 against a ceiling") {
		t.Fatalf("bugs = %q, want one for 1.11", rep.bugs)
	}
	if !strings.Contains(out.String(), "BENCH BUG") {
		t.Errorf("table does not say BENCH BUG:\n%s", out.String())
	}
	// One sample (-quick): above 1.0 by rate but dearer per operation than
	// the ceiling is noise, not a bug; cheaper too is a bug.
	q := &Report{out: &bytes.Buffer{}, singleSample: true}
	noisy := []Row{{Name: "ours", Median: Sample{Rate: 1050, CPUPerOp: 2 * time.Microsecond}}, {Name: "ceiling", Median: Sample{Rate: 1000, CPUPerOp: time.Microsecond}}}
	q.add("g", "pkts/s", noisy)
	q.ceilingRatio("g", "ours / ceiling", noisy, "ours", "ceiling", 0)
	if len(q.bugs) != 0 || len(q.notes) != 1 {
		t.Errorf("single noisy sample: bugs %q notes %q, want a note only", q.bugs, q.notes)
	}
	bad := []Row{{Name: "ours", Median: Sample{Rate: 1050, CPUPerOp: time.Microsecond}}, {Name: "ceiling", Median: Sample{Rate: 1000, CPUPerOp: 2 * time.Microsecond}}}
	q.add("h", "pkts/s", bad)
	q.ceilingRatio("h", "ours / ceiling", bad, "ours", "ceiling", 0)
	if len(q.bugs) != 1 {
		t.Errorf("single sample faster and cheaper than the ceiling: bugs %q, want one", q.bugs)
	}
	// A plain ratio above 1 is fine.
	rep.ratio("g", "ours / theirs", rs, "ours", "theirs", 2)
	if len(rep.bugs) != 1 {
		t.Errorf("plain ratio 3.0 flagged as a bug: %q", rep.bugs)
	}
}

func TestAlternateRotatesAndKeepsErrors(t *testing.T) {
	var order []string
	mk := func(name string, fail bool) func() (Sample, error) {
		return func() (Sample, error) {
			order = append(order, name)
			if fail {
				return Sample{}, os.ErrDeadlineExceeded
			}
			return Sample{Rate: float64(len(order))}, nil
		}
	}
	rows := alternate(3, []string{"a", "b", "c"}, []func() (Sample, error){mk("a", false), mk("b", false), mk("c", true)})
	// round 1: a b c (c fails, never runs again); round 2: b a; round 3: a b
	if got := strings.Join(order, ""); got != "abcbaab" {
		t.Errorf("order %q, want rotating abc, ba, ab", got)
	}
	if rows[2].Err == "" || len(rows[2].Samples) != 0 {
		t.Errorf("failed side: %+v, want Err and no samples", rows[2])
	}
	if len(rows[0].Samples) != 3 || len(rows[1].Samples) != 3 {
		t.Errorf("samples a=%d b=%d, want 3 each", len(rows[0].Samples), len(rows[1].Samples))
	}
}

// fixedReport is a report with one group of each kind of row and ratio.
func fixedReport() *Report {
	rep := &Report{out: &bytes.Buffer{}}
	rep.add("Uplink forwarding, 1400-byte IP packets", "pkts/s", []Row{
		{Name: "ESP ceiling aes128gcm16", Median: Sample{Rate: 200000, Mbps: 2240, CPUPerOp: 2400 * time.Nanosecond}, Samples: make([]Sample, 5)},
		{Name: "ours aes128gcm16", Median: Sample{Rate: 120000, Mbps: 1344, CPUPerOp: 6300 * time.Nanosecond, Loss: 0.001}, Samples: make([]Sample, 5)},
		{Name: "SoftEther aes128-sha1", Err: "vpnserver | not found"},
	})
	g := "Uplink forwarding, 1400-byte IP packets"
	rows := rep.find(g).rows
	rep.ceilingRatio(g, "ours aes128gcm16 / its ESP ceiling", rows, "ours aes128gcm16", "ESP ceiling aes128gcm16", 0.8)
	rep.ratio(g, "ours / SoftEther", rows, "ours aes128gcm16", "SoftEther aes128-sha1", 2)
	rep.add("Session set-up", "sessions/s", []Row{
		{Name: "ours", Median: Sample{Rate: 160, CPUPerOp: 3400 * time.Microsecond}, Samples: make([]Sample, 5)},
		{Name: "SoftEther", Median: Sample{Rate: 0.8, CPUPerOp: 15600 * time.Microsecond}, Samples: make([]Sample, 5)},
	})
	rep.ratio("Session set-up", "ours / SoftEther (set-ups/s)", rep.find("Session set-up").rows, "ours", "SoftEther", 2)
	rep.notes = []string{"SoftEther skipped: vpnserver not found"}
	return rep
}

// TestMarkdownGolden: a fixed report gives a fixed BENCHMARKS.md
// (testdata/benchmarks.golden.md; go test -update rewrites it).
func TestMarkdownGolden(t *testing.T) {
	h := docHeader{Args: []string{"-reps", "5"}, Reps: 5, Machine: "Test CPU, 2 cores (GOMAXPROCS 2), linux/amd64",
		Date: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Took: 317 * time.Second, Go: "go1.26"}
	got := markdown(h, fixedReport())
	path := filepath.Join("testdata", "benchmarks.golden.md")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("markdown differs from %s (go test -update to accept):\n%s", path, got)
	}
	for _, s := range []string{"| ours aes128gcm16 | 120000.0 | 1344.0 | 6.3µs | 0.1 % | 5 |", "failed: vpnserver / not found",
		"ours aes128gcm16 / its ESP ceiling: **0.60** (goal ≥ 0.80: MISSED); ceiling: must be <= 1.00; CPU per op, right side ÷ left side: 0.38",
		"ours / SoftEther: n/a (a side did not run)", "CPU per op, right side ÷ left side: 4.59"} {
		if !bytes.Contains(got, []byte(s)) {
			t.Errorf("markdown lacks %q", s)
		}
	}
}

// TestChart checks the drawn bars of the fixed report: rows in ratio
// order (absent ratios left out), green met / red missed rate bars of the
// ratio's length, a blue CPU bar under each, the goal tick.
func TestChart(t *testing.T) {
	img := chart(fixedReport())
	rowH := chartBarH + 2 + chartCPUH + chartGap
	if h := img.Bounds().Dy(); h != chartGap+2*rowH {
		t.Fatalf("chart height %d, want 2 rows (%d)", h, chartGap+2*rowH)
	}
	scale := float64(chartW-2*chartLeft) / chartMax // the 200× ratio sets the scale to the clip limit
	at := func(v float64) int { return chartLeft + int(v*scale) }
	same := func(c color.Color, want color.RGBA) bool {
		r, g, b, _ := c.RGBA()
		return uint8(r>>8) == want.R && uint8(g>>8) == want.G && uint8(b>>8) == want.B
	}
	// Row 0: forwarding vs ceiling 0.60, missed (red); CPU 0.38 (blue).
	y0 := chartGap + chartBarH/2
	if c := img.At(at(0.55), y0); !same(c, chartMissed) {
		t.Errorf("row 0 rate bar at 0.55: %v, want red", c)
	}
	if c := img.At(at(0.65), y0); same(c, chartMissed) {
		t.Errorf("row 0 rate bar reaches 0.65, want it to end at 0.60")
	}
	yc := chartGap + chartBarH + 2 + chartCPUH/2
	if c := img.At(at(0.30), yc); !same(c, chartCPU) {
		t.Errorf("row 0 CPU bar at 0.30: %v, want blue", c)
	}
	if c := img.At(at(0.45), yc); same(c, chartCPU) {
		t.Errorf("row 0 CPU bar reaches 0.45, want it to end at 0.38")
	}
	if c := img.At(at(0.8), chartGap-2); !same(c, color.RGBA{0, 0, 0, 255}) {
		t.Errorf("row 0 goal tick at 0.8: %v, want black", c)
	}
	// Row 1: set-ups 200×, met (green), clipped: runs to the right edge
	// with white notches.
	y1 := chartGap + rowH + chartBarH/2
	if c := img.At(at(3.0), y1); !same(c, chartMet) {
		t.Errorf("row 1 rate bar at 3.0: %v, want green", c)
	}
	if c := img.At(at(chartMax)-8+1, y1); !same(c, color.RGBA{255, 255, 255, 255}) {
		t.Errorf("row 1 clipped bar: %v at its notch, want white", c)
	}
}

func TestFailuresIgnoreSkips(t *testing.T) {
	rep := &Report{out: &bytes.Buffer{}}
	rep.add("g", "x", []Row{{Name: "a", Err: "skipped: not root"}, {Name: "b", Err: "dial: timeout"}, {Name: "c"}})
	f := rep.failures()
	if len(f) != 1 || !strings.Contains(f[0], "b: dial: timeout") {
		t.Errorf("failures = %q, want only b's", f)
	}
}

func TestQuickOptionsRunEverySuiteSmall(t *testing.T) {
	o := &Options{Reps: 5, Dur: 2 * time.Second, Docs: "docs"}
	quickOptions(o)
	if o.Reps != 1 || o.Dur > time.Second || o.Docs != "" || o.StormSensors > 500 || len(o.Sessions) != 1 || len(o.FailoverEdges) != 1 || o.FailoverEdges[0] > 20 {
		t.Errorf("quick options %+v: want 1 round, short samples, no docs, small fleets", o)
	}
	seen := map[string]bool{}
	for _, s := range suites {
		if seen[s.name] || s.run == nil {
			t.Errorf("suite %q duplicated or without a run function", s.name)
		}
		seen[s.name] = true
	}
}

// TestRecheckCeiling: a side above its ceiling by noise is measured again
// until the medians settle below it; a side that really beats its ceiling
// stays above after every extra round (and is then a bench bug).
func TestRecheckCeiling(t *testing.T) {
	script := func(rates ...float64) func() (Sample, error) {
		i := 0
		return func() (Sample, error) {
			r := rates[min(i, len(rates)-1)]
			i++
			return Sample{Rate: r, CPUPerOp: time.Microsecond}, nil
		}
	}
	row := func(name string, r float64) Row {
		s := Sample{Rate: r, CPUPerOp: time.Microsecond}
		return Row{Name: name, Samples: []Sample{s}, Median: s}
	}
	// Noise: the ceiling's one sample was starved (500); measured again it
	// is 1000, ours 900.
	rows := []Row{row("ours", 900), row("ceiling", 500)}
	runs := []func() (Sample, error){script(900, 900, 900, 900), script(1000, 1000, 1000, 1000)}
	recheckCeiling(rows, runs, "ours", "ceiling")
	if rt := computeRatio("", rows, "ours", "ceiling", 0, true); rt.value > 1 {
		t.Fatalf("noise: ratio %.2f after recheck, want <= 1 (samples %d/%d)", rt.value, len(rows[0].Samples), len(rows[1].Samples))
	}
	if n := len(rows[1].Samples); n < 2 || n > 1+ceilingRechecks {
		t.Fatalf("noise: ceiling has %d samples, want 2..%d", n, 1+ceilingRechecks)
	}
	// A real bug: ours is always faster.
	rows = []Row{row("ours", 1100), row("ceiling", 1000)}
	runs = []func() (Sample, error){script(1100), script(1000)}
	recheckCeiling(rows, runs, "ours", "ceiling")
	if rt := computeRatio("", rows, "ours", "ceiling", 0, true); rt.value <= 1 {
		t.Fatalf("real bug hidden: ratio %.2f", rt.value)
	}
	if n := len(rows[0].Samples); n != 1+ceilingRechecks {
		t.Fatalf("real bug: %d samples, want %d", n, 1+ceilingRechecks)
	}
	var out bytes.Buffer
	rep := &Report{out: &out}
	rep.add("g", "pkts/s", rows)
	rep.ceilingRatio("g", "ours / ceiling", rows, "ours", "ceiling", 0)
	if len(rep.bugs) != 1 {
		t.Fatalf("real bug after recheck: bugs %q, want one", rep.bugs)
	}
}
