// Package run is the engine of the bench command: pairs measured side by
// side in one run (A/B alternating, medians), the table, docs/BENCHMARKS.md
// and the ratio chart.
package run

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Options are the command's flags.
type Options struct {
	// Reps is how many A/B rounds each pair runs (medians over them).
	Reps int
	// Dur is the length of one forwarding sample.
	Dur time.Duration
	// Setups is how many sessions one set-up sample brings up.
	Setups int
	// Handshakes is how many DTLS handshakes one sample runs.
	Handshakes int
	// Sessions lists the idle-session counts for the memory measurement.
	Sessions []int
	// Only runs just the named measurements (comma-separated).
	Only string
	// Devices is how many simulated devices the CoAP relay runs.
	Devices int
	// InFlight bounds the CoAP relay's requests in flight fleet-wide.
	InFlight int
	// Endpoints lists the idle-endpoint counts for the bridge memory.
	Endpoints []int
	// HeapProfile, if set, is where the endpoint measurement writes a heap
	// profile (suffixed with the endpoint count) with every session up.
	HeapProfile string
	// StormSensors and StormUplinks size the reconnect storms; StormPar
	// is the handshakes in flight per device process.
	StormSensors, StormUplinks, StormPar int
	// StormIKE is the uplink storm's IKE proposal.
	StormIKE string
	// DTLSCases selects the DTLS pairs: "psk", "ecdsa" or both.
	DTLSCases string
	// Docs is where BENCHMARKS.md and benchmarks.png go ("" = don't write).
	Docs string
}

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

type ratio struct {
	label      string
	value      float64
	goal       float64
	ok, absent bool
}

// Report collects every group, ratio and note of a run.
type Report struct {
	groups []*group
	notes  []string
	start  time.Time
}

func (r *Report) note(f string, args ...any) {
	m := fmt.Sprintf(f, args...)
	logf("note: %s", m)
	r.notes = append(r.notes, m)
}

func (r *Report) add(title, unit string, rows []Row) {
	r.groups = append(r.groups, &group{title: title, unit: unit, rows: rows})
	printGroup(os.Stdout, r.groups[len(r.groups)-1])
}

func (r *Report) find(title string) *group {
	for _, g := range r.groups {
		if g.title == title {
			return g
		}
	}
	return nil
}

// ratio records median(a)/median(b) of a group, with the goal.
func (r *Report) ratio(title, label string, rows []Row, a, b string, goal float64) {
	g := r.find(title)
	var va, vb float64
	for _, row := range rows {
		if row.Err != "" {
			continue
		}
		if row.Name == a {
			va = row.Median.Rate
		}
		if row.Name == b {
			vb = row.Median.Rate
		}
	}
	rt := ratio{label: label, goal: goal}
	if va == 0 || vb == 0 {
		rt.absent = true
	} else {
		rt.value = va / vb
		rt.ok = rt.value >= goal
	}
	g.ratios = append(g.ratios, rt)
	if rt.absent {
		fmt.Printf("  ratio %s: n/a (a side did not run)\n", label)
	} else {
		fmt.Printf("  ratio %s: %.2f (goal >= %.2f: %s)\n", label, rt.value, goal, okWord(rt.ok))
	}
}

func okWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// alternate runs every side once per round, rotating the order each round
// so no side always goes first, and returns rows with medians.
func alternate(reps int, names []string, runs []func() (Sample, error)) []Row {
	rows := make([]Row, len(names))
	for i := range names {
		rows[i].Name = names[i]
	}
	for rep := range reps {
		for k := range names {
			i := (k + rep) % len(names)
			if rows[i].Err != "" {
				continue
			}
			runtime.GC()
			s, err := runs[i]()
			if err != nil {
				rows[i].Err = err.Error()
				logf("%s: %v", names[i], err)
				continue
			}
			logf("round %d %s: %.0f/s cpu %v/op", rep+1, names[i], s.Rate, s.CPUPerOp)
			rows[i].Samples = append(rows[i].Samples, s)
		}
	}
	for i := range rows {
		rows[i].Median = median(rows[i].Samples)
	}
	return rows
}

func median(ss []Sample) Sample {
	if len(ss) == 0 {
		return Sample{}
	}
	pick := func(f func(Sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Sample{
		Rate:     pick(func(s Sample) float64 { return s.Rate }),
		Mbps:     pick(func(s Sample) float64 { return s.Mbps }),
		CPUPerOp: time.Duration(pick(func(s Sample) float64 { return float64(s.CPUPerOp) })),
		Loss:     pick(func(s Sample) float64 { return s.Loss }),
	}
}

func printGroup(w io.Writer, g *group) {
	fmt.Fprintf(w, "\n%s\n", g.title)
	fmt.Fprintf(w, "  %-44s %12s %10s %12s %7s %s\n", "side", "median "+g.unit, "Mbit/s", "CPU/op", "loss", "samples")
	for _, r := range g.rows {
		if r.Err != "" {
			fmt.Fprintf(w, "  %-44s FAILED: %s\n", r.Name, r.Err)
			continue
		}
		fmt.Fprintf(w, "  %-44s %12.1f %10s %12v %6.1f%% %d\n", r.Name, r.Median.Rate, mbps(r.Median.Mbps),
			r.Median.CPUPerOp.Round(100*time.Nanosecond), r.Median.Loss*100, len(r.Samples))
	}
}

func mbps(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// cpuTime is this process's user+system CPU time (getrusage).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// treeCPU sums utime+stime of pid and all its descendants (/proc).
func treeCPU(pid int) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type st struct {
		ppid int
		tick uint64
	}
	procs := map[int]st{}
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) in ")".
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		var ppid int
		var ut, stt uint64
		fmt.Sscanf(f[1], "%d", &ppid)
		fmt.Sscanf(f[11], "%d", &ut)
		fmt.Sscanf(f[12], "%d", &stt)
		procs[p] = st{ppid, ut + stt}
	}
	var sum uint64
	var walk func(int)
	walk = func(p int) {
		sum += procs[p].tick
		for c, s := range procs {
			if s.ppid == p {
				walk(c)
			}
		}
	}
	walk(pid)
	return time.Duration(sum) * 10 * time.Millisecond // USER_HZ = 100
}

// skipReason runs a testenv check and returns why it would skip ("" if
// it passes).
func skipReason(check func(t testing.TB)) string {
	skipped, msg, err := runScoped("bench", check)
	if err != nil {
		return err.Error()
	}
	if skipped {
		return msg
	}
	return ""
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func logf(f string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Main runs the command with args and returns its exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &Options{}
	fs.IntVar(&o.Reps, "reps", 5, "A/B rounds per pair (medians over them)")
	fs.DurationVar(&o.Dur, "dur", 2*time.Second, "length of one forwarding sample")
	fs.IntVar(&o.Setups, "setups", 10, "sessions per set-up sample")
	fs.IntVar(&o.Handshakes, "handshakes", 200, "DTLS handshakes per sample")
	sessions := fs.String("sessions", "1000", "idle session counts for memory (comma-separated, e.g. 1000,10000)")
	fs.IntVar(&o.Devices, "devices", 2000, "simulated devices for the CoAP relay (coap)")
	fs.IntVar(&o.InFlight, "coap-inflight", 64, "CoAP relay: requests in flight across the fleet")
	endpoints := fs.String("endpoints", "10000", "idle endpoint counts for the bridge memory (comma-separated, e.g. 10000,100000)")
	fs.IntVar(&o.StormSensors, "storm-sensors", 5000, "storm: sensors re-connecting after a bridge restart")
	fs.IntVar(&o.StormUplinks, "storm-uplinks", 200, "storm: edge uplinks re-connecting after a gateway restart")
	fs.StringVar(&o.StormIKE, "storm-ike", "aes128-sha1-modp2048", "storm: the edge uplinks' IKE proposal")
	fs.IntVar(&o.StormPar, "storm-par", 64, "storm: handshakes in flight per device process")
	fs.StringVar(&o.DTLSCases, "dtls-cases", "psk,ecdsa", "dtls: which handshake pairs (psk, ecdsa)")
	fs.StringVar(&o.Only, "only", "", "run only these measurements: forwarding,setup,memory,dtls,coap,endpoints,storm")
	fs.StringVar(&o.Docs, "docs", "docs", "directory for BENCHMARKS.md and benchmarks.png (empty: don't write)")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	hc := fs.Int("helper-clients", 0, "internal: run as the client process of the memory measurement")
	hIKE := fs.String("helper-ike", "", "internal: gateway IKE address for -helper-clients")
	hNATT := fs.Int("helper-natt", 0, "internal: gateway NAT-T port for -helper-clients")
	fs.StringVar(&o.HeapProfile, "heapprofile", "", "endpoints: write a heap profile with all sessions up to this path (+ .count)")
	hd := fs.String("helper-devices", "", "internal: run as a device process of the bridge memory and storm measurements")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *hd != "" {
		return helperDevices(*hd)
	}
	if *hc > 0 {
		return helperClients(*hc, *hIKE, *hNATT)
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	for _, s := range strings.Split(*sessions, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d", &n); err == nil && n > 0 {
			o.Sessions = append(o.Sessions, n)
		}
	}
	for _, s := range strings.Split(*endpoints, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d", &n); err == nil && n > 0 {
			o.Endpoints = append(o.Endpoints, n)
		}
	}
	want := func(name string) bool {
		return o.Only == "" || slices.Contains(strings.Split(o.Only, ","), name)
	}
	rep := &Report{start: time.Now()}
	steps := []struct {
		name string
		fn   func(*Options, *Report)
	}{
		{"forwarding", benchForwarding},
		{"setup", benchSetup},
		{"memory", benchMemory},
		{"dtls", benchDTLS},
		{"coap", benchCoAPRelay},
		{"endpoints", benchEndpoints},
		{"storm", benchStorm},
	}
	for _, s := range steps {
		if want(s.name) {
			logf("== %s", s.name)
			s.fn(o, rep)
		}
	}
	if o.Docs != "" {
		if err := writeDocs(o, rep, args); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	return 0
}
