package suite

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestFailoverMarks: 50/99/100 % marks over the edges that came back,
// counted against every edge (an edge that never came back leaves the
// higher marks empty).
func TestFailoverMarks(t *testing.T) {
	s := time.Second
	at := []time.Duration{9 * s, 0, 1 * s, 5 * s, 3 * s, 0, 7 * s, 2 * s, 4 * s, 6 * s}
	marks, reached := failoverMarks(at)
	if reached != 8 || marks != [3]time.Duration{5 * s, 0, 0} {
		t.Errorf("8 of 10 back: marks %v reached %d, want [5s 0 0] and 8", marks, reached)
	}
	all := []time.Duration{3 * s, 1 * s, 2 * s}
	if marks, reached := failoverMarks(all); reached != 3 || marks != [3]time.Duration{2 * s, 3 * s, 3 * s} {
		t.Errorf("3 of 3 back: marks %v reached %d, want [2s 3s 3s] and 3", marks, reached)
	}
	if marks, reached := failoverMarks(nil); reached != 0 || marks != [3]time.Duration{} {
		t.Errorf("no edges: %v %d", marks, reached)
	}
}

// TestPrintGroupTable: the terminal table of a group, column for column.
func TestPrintGroupTable(t *testing.T) {
	var b bytes.Buffer
	printGroup(&b, &group{title: "Forwarding", unit: "pkts/s", rows: []Row{
		{Name: "ours", Samples: make([]Sample, 3), Median: Sample{Rate: 1234.56, Mbps: 98.76, CPUPerOp: 1234 * time.Nanosecond, Loss: 0.015}},
		{Name: "no mbps", Samples: make([]Sample, 1), Median: Sample{Rate: 2}},
		{Name: "theirs", Err: "dial: refused"},
	}})
	want := "\nForwarding\n" +
		"  side                                               median pkts/s     Mbit/s       CPU/op    loss samples\n" +
		"  ours                                                     1234.6       98.8        1.2µs    1.5% 3\n" +
		"  no mbps                                                     2.0          -           0s    0.0% 1\n" +
		"  theirs                                             FAILED: dial: refused\n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestDescribeVariants: the ratio line without a goal, without CPU
// figures, as a ceiling, in markdown, and absent.
func TestDescribeVariants(t *testing.T) {
	for _, tt := range []struct {
		rt   ratio
		md   bool
		want string
	}{
		{ratio{label: "a/b", value: 1.5, ok: true}, false, "a/b: 1.50 (no goal); CPU per op: not measured"},
		{ratio{label: "a/b", value: 0.5, goal: 0.8, cpu: 2}, true, "a/b: **0.50** (goal ≥ 0.80: MISSED); CPU per op, right side ÷ left side: 2.00"},
		{ratio{label: "a/c", value: 0.9, goal: 0.8, ok: true, ceiling: true}, false, "a/c: 0.90 (goal >= 0.80: met); ceiling: must be <= 1.00; CPU per op: not measured"},
		{ratio{label: "a/d", absent: true, goal: 1}, true, "a/d: n/a (a side did not run)"},
	} {
		if got := tt.rt.describe(tt.md); got != tt.want {
			t.Errorf("describe(%v) = %q, want %q", tt.md, got, tt.want)
		}
	}
}

// TestAttackTable: held, not held and failed rows in run order, pipes in
// cells escaped; only the failed row is a -quick failure.
func TestAttackTable(t *testing.T) {
	rep := &Report{out: &bytes.Buffer{}}
	var b bytes.Buffer
	attackTable(&b, rep)
	if b.Len() != 0 {
		t.Fatalf("no attacks: section %q, want none", b.String())
	}
	rep.attack(AttackRow{Target: "gateway", Attack: "MM1 flood 10k/s", Bound: "half-open ≤ 512", Measured: "512", Held: true})
	rep.attack(AttackRow{Target: "bridge", Attack: "a|b", Bound: "x", Measured: "y"})
	rep.attack(AttackRow{Target: "bridge", Attack: "hello flood", Bound: "z", Err: "not root"})
	attackTable(&b, rep)
	rows := "| gateway | MM1 flood 10k/s | half-open ≤ 512 | 512 | yes |\n" +
		"| bridge | a/b | x | y | **no** |\n" +
		"| bridge | hello flood | z | failed: not root | did not run |\n"
	if !strings.HasPrefix(b.String(), "## Under attack\n") || !strings.Contains(b.String(), "|---|---|---|---|---|\n"+rows+"\n") {
		t.Errorf("section:\n%s\nwant the rows\n%s", b.String(), rows)
	}
	if f := rep.attackFailures(); !slices.Equal(f, []string{"under attack: bridge: hello flood: not root"}) {
		t.Errorf("attack failures %q", f)
	}
}

// TestSoakSection: a fixed soak result gives a fixed table row and the
// per-cycle line; no soak, no section.
func TestSoakSection(t *testing.T) {
	var b bytes.Buffer
	soakSection(&b, &Report{})
	if b.Len() != 0 {
		t.Fatalf("no soak: %q", b.String())
	}
	rep := &Report{soak: &soakResult{Plan: "3 cycles", Test: "TestSoak", Took: 61400 * time.Millisecond,
		Devices:   []soakDevice{{Name: "s17", Kind: "coap", Sent: 100, Acked: 99, AtCentral: 99, Lost: 0, Duplicated: 1, Unavailable: 1, TimedOut: 0, Handshakes: 2}},
		FirstCoAP: []string{"0s", "1.2s"}, Retrans: 4, Replaced: 1, Err: "a|b"}}
	soakSection(&b, rep)
	for _, s := range []string{"e2e `TestSoak` (issue 16) with the real gateway and bridge in namespaces, run by this command (1m1s): 3 cycles.",
		"**Failed**: a/b\n", "| s17 | coap | 100 | 99 | 99 | 0 | 1 | 1 | 0 | 2 |\n",
		"per cycle (0s: it arrived before the 100 ms /status poll saw the uplink up): 0s, 1.2s; spooled CoAP retransmissions 4; upstream conns replaced 1.\n"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("soak section lacks %q:\n%s", s, b.String())
		}
	}
	if got := lastN([]string{"a", "b", "c"}, 2); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("lastN = %q", got)
	}
	if got := lastN([]string{"a"}, 2); !slices.Equal(got, []string{"a"}) {
		t.Errorf("lastN short = %q", got)
	}
}

// TestRunScoped: the testing.TB stand-in ends fn at a skip (through
// testenv) or a Fatal, runs cleanups in reverse afterwards, turns a panic
// into a failure, and records failures for -quick.
func TestRunScoped(t *testing.T) {
	before := scopeFailures()
	t.Cleanup(func() { failedMu.Lock(); failed = before; failedMu.Unlock() })
	var order []int
	skipped, msg, err := runScoped("s", func(tb testing.TB) {
		tb.Cleanup(func() { order = append(order, 1) })
		tb.Cleanup(func() { order = append(order, 2) })
		testenv.OptIn(tb, false, "-x")
		order = append(order, 99) // not reached
	})
	if !skipped || err != nil || !strings.Contains(msg, "runs with -x") || !slices.Equal(order, []int{2, 1}) {
		t.Errorf("skip: skipped %v msg %q err %v cleanups %v", skipped, msg, err, order)
	}
	_, _, err = runScoped("f", func(tb testing.TB) { tb.Fatalf("boom %d", 7) })
	if err == nil || err.Error() != "f: boom 7" {
		t.Errorf("fatal: err %v", err)
	}
	_, _, err = runScoped("p", func(tb testing.TB) { panic("oops") })
	if err == nil || err.Error() != "p: panic: oops" {
		t.Errorf("panic: err %v", err)
	}
	if got := scopeFailures()[len(before):]; !slices.Equal(got, []string{"f: boom 7", "p: panic: oops"}) {
		t.Errorf("recorded failures %q", got)
	}
	if r := skipReason(func(tb testing.TB) {}); r != "" {
		t.Errorf("skipReason of a passing check = %q", r)
	}
	if r := skipReason(func(tb testing.TB) { testenv.OptIn(tb, false, "-y") }); !strings.Contains(r, "-y") {
		t.Errorf("skipReason = %q", r)
	}
}
