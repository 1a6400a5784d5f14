// The report: samples and rows, groups, ratios with goals and ceilings, the table, and what fails a run.

package suite

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Sample is one repetition of one side.
type Sample struct {
	// Rate is operations (packets, sessions, handshakes) per second.
	Rate float64
	// Mbps is IP-payload megabits per second (forwarding only).
	Mbps float64
	// CPUPerOp is CPU time (user+system, all processes involved) per op.
	CPUPerOp time.Duration
	// Loss is the fraction of packets sent but not counted.
	Loss float64
}

// Row is one side's samples and their medians.
type Row struct {
	Name    string
	Samples []Sample
	Median  Sample
	Err     string
}

type group struct {
	title, unit string
	rows        []Row
	ratios      []ratio
}

// ratio is one side-by-side comparison a/b of a group.
type ratio struct {
	label string
	// value is the rate ratio: median rate of a / median rate of b.
	value float64
	// cpu is the CPU-per-operation ratio the other way round: b's CPU per
	// op / a's (higher is better for a, as value); 0 when a side has no
	// CPU figure.
	cpu float64
	// goal is the goal for value (0: none).
	goal float64
	// ceiling marks b as a ceiling for a: value > 1 is a bench bug.
	ceiling    bool
	ok, absent bool
}

// Report collects every group, ratio and note of a run.
type Report struct {
	groups []*group
	notes  []string
	// attacks are the "Under attack" rows (attack.go).
	attacks []AttackRow
	// soak is the field soak's result (soak.go), nil if it did not run.
	soak *soakResult
	// bugs are ratios above 1.0 against a ceiling: the run fails.
	bugs []string
	// singleSample (-quick: one short round) lets a ceiling ratio above
	// 1.0 pass when the side still spends more CPU per operation than its
	// ceiling (see addRatio).
	singleSample bool
	start        time.Time
	out          io.Writer // the table (os.Stdout when nil)
}

func (r *Report) w() io.Writer {
	if r.out == nil {
		return os.Stdout
	}
	return r.out
}

func (r *Report) note(f string, args ...any) {
	m := fmt.Sprintf(f, args...)
	logf("note: %s", m)
	r.notes = append(r.notes, m)
}

func (r *Report) add(title, unit string, rows []Row) {
	r.groups = append(r.groups, &group{title: title, unit: unit, rows: rows})
	printGroup(r.w(), r.groups[len(r.groups)-1])
}

func (r *Report) find(title string) *group {
	for _, g := range r.groups {
		if g.title == title {
			return g
		}
	}
	return nil
}

// ratio records median(a)/median(b) of a group, with the goal
// (0: none), and the CPU-per-operation ratio of the same two sides.
func (r *Report) ratio(title, label string, rows []Row, a, b string, goal float64) {
	r.addRatio(title, computeRatio(label, rows, a, b, goal, false))
}

// ceilingRatio is ratio where b is a ceiling of a (the same work minus the
// product's layers): a ratio above 1.0 is a bug in the bench, and the run
// fails loudly instead of reporting it.
func (r *Report) ceilingRatio(title, label string, rows []Row, a, b string, goal float64) {
	r.addRatio(title, computeRatio(label, rows, a, b, goal, true))
}

func (r *Report) addRatio(title string, rt ratio) {
	g := r.find(title)
	g.ratios = append(g.ratios, rt)
	fmt.Fprintf(r.w(), "  ratio %s\n", rt.describe())
	if rt.ceiling && !rt.absent && rt.value > 1 {
		if r.singleSample && rt.cpu > 0 && rt.cpu <= 1 {
			// One short sample on a loaded machine: the rate can cross
			// the ceiling by noise, but a real ceiling bug also makes
			// this side cheaper per operation than its ceiling.
			r.note("%s: %s = %.2f > 1.0 in a single sample, but it spends more CPU per operation than its ceiling (%.2f): noise, not a ceiling bug", title, rt.label, rt.value, rt.cpu)
			return
		}
		bug := fmt.Sprintf("BENCH BUG: %s: %s = %.2f > 1.0 against a ceiling: the ceiling is not a ceiling (fix the bench, do not report this figure)", title, rt.label, rt.value)
		r.bugs = append(r.bugs, bug)
		fmt.Fprintln(r.w(), "  "+bug)
		logf("%s", bug)
	}
}

// computeRatio compares sides a and b of rows (medians; a failed side
// makes the ratio absent).
func computeRatio(label string, rows []Row, a, b string, goal float64, ceiling bool) ratio {
	ra, rb := pairRows(rows, a, b)
	rt := ratio{label: label, goal: goal, ceiling: ceiling}
	if ra == nil || rb == nil || ra.Median.Rate == 0 || rb.Median.Rate == 0 {
		rt.absent = true
		return rt
	}
	rt.value = ra.Median.Rate / rb.Median.Rate
	rt.ok = rt.value >= goal
	if ra.Median.CPUPerOp > 0 && rb.Median.CPUPerOp > 0 {
		rt.cpu = float64(rb.Median.CPUPerOp) / float64(ra.Median.CPUPerOp)
	}
	return rt
}

// describe is the ratio's line in the table; md: in BENCHMARKS.md.
func (rt ratio) describe(md ...bool) string {
	if rt.absent {
		return rt.label + ": n/a (a side did not run)"
	}
	val, ge := "%.2f", ">="
	if len(md) > 0 && md[0] {
		val, ge = "**%.2f**", "≥"
	}
	s := fmt.Sprintf("%s: "+val, rt.label, rt.value)
	if rt.goal > 0 {
		s += fmt.Sprintf(" (goal %s %.2f: %s)", ge, rt.goal, okWord(rt.ok))
	} else {
		s += " (no goal)"
	}
	if rt.ceiling {
		s += "; ceiling: must be <= 1.00"
	}
	if rt.cpu > 0 {
		s += fmt.Sprintf("; CPU per op, right side ÷ left side: %.2f", rt.cpu)
	} else {
		s += "; CPU per op: not measured"
	}
	return s
}

func okWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func printGroup(w io.Writer, g *group) {
	fmt.Fprintf(w, "\n%s\n", g.title)
	fmt.Fprintf(w, "  %-50s %12s %10s %12s %7s %s\n", "side", "median "+g.unit, "Mbit/s", "CPU/op", "loss", "samples")
	for _, r := range g.rows {
		if r.Err != "" {
			fmt.Fprintf(w, "  %-50s FAILED: %s\n", r.Name, r.Err)
			continue
		}
		fmt.Fprintf(w, "  %-50s %12.1f %10s %12v %6.1f%% %d\n", r.Name, r.Median.Rate, mbps(r.Median.Mbps),
			r.Median.CPUPerOp.Round(100*time.Nanosecond), r.Median.Loss*100, len(r.Samples))
	}
}

func mbps(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// failures lists what makes a -quick run fail: measurements that failed
// (runScoped), and sides that failed for another reason than a skip.
func (r *Report) failures() []string {
	f := append(scopeFailures(), r.attackFailures()...)
	if r.soak != nil && r.soak.Err != "" && !strings.HasPrefix(r.soak.Err, "skipped") {
		f = append(f, "soak: "+r.soak.Err)
	}
	for _, g := range r.groups {
		for _, row := range g.rows {
			if row.Err != "" && !strings.HasPrefix(row.Err, "skipped") {
				f = append(f, fmt.Sprintf("%s: %s: %s", g.title, row.Name, row.Err))
			}
		}
	}
	return f
}

// pairRows finds the rows named a and b that measured something (no Err);
// nil where there is none.
func pairRows(rows []Row, a, b string) (ra, rb *Row) {
	for i := range rows {
		switch {
		case rows[i].Err != "":
		case rows[i].Name == a:
			ra = &rows[i]
		case rows[i].Name == b:
			rb = &rows[i]
		}
	}
	return ra, rb
}
