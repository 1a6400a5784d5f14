// Package run is the engine of the bench command: pairs measured side by
// side in one run (A/B alternating, medians), the table, docs/BENCHMARKS.md
// and the ratio chart.
package suite

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
	// Devices lists the CoAP relay's fleet sizes (one measurement each).
	Devices []int
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
	// AttackDur is how long the attack suite's IKE flood runs, and
	// AttackSites how many real sites set up during it.
	AttackDur   time.Duration
	AttackSites int
	// FailoverEdges lists the edge counts of the failover suite.
	FailoverEdges []int
	// SoakDur is how long the soak suite's TestSoakLong runs (0: the
	// short TestSoak).
	SoakDur time.Duration
	// Quick runs every suite once at the smallest sizes that still
	// exercise it (make test): a run with a failed suite, a failed side
	// or a ceiling bug exits non-zero.
	Quick bool
}

// suite is one measurement of the command; -only selects by name.
type suite struct {
	name string
	run  func(*Options, *Report)
}

// suites are the measurements in run order. Adding one is a line here
// (its run function records groups and ratios in the Report); -quick runs
// it too, with the Options quickOptions sets.
var suites = []suite{
	{"forwarding", benchForwarding},
	{"tun", benchTUN},
	{"tun6", benchTUN6}, // tun6.go: the same by inner family (IPv4 / IPv6)
	{"setup", benchSetup},
	{"memory", benchMemory},
	{"dtls", benchDTLS},
	{"coap", benchCoAPRelay},
	{"endpoints", benchEndpoints},
	{"storm", benchStorm},
	{"attack", benchAttack},
	{"attack-auth", benchAttackAuth},
	{"attack-bridge", benchAttackBridge},
	{"fair", benchFair},
	{"spool", benchSpool},
	{"failover", benchFailover},
	{"soak", benchSoak},
}

// quickOptions shrinks o for -quick: one round, short samples, small
// fleets; every suite still runs every side once.
func quickOptions(o *Options) {
	o.Reps = 1
	o.Dur = 300 * time.Millisecond
	o.Setups = 2
	o.Handshakes = 20
	o.Sessions = []int{50}
	o.Devices = []int{100}
	o.InFlight = 16
	o.Endpoints = []int{200}
	o.StormSensors, o.StormUplinks = 100, 5
	o.AttackDur, o.AttackSites = 2*time.Second, 2
	o.FailoverEdges = []int{10}
	o.Docs = ""
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

// ceilingRechecks is how many extra rounds recheckCeiling runs.
const ceilingRechecks = 4

// recheckCeiling re-measures side a and its ceiling b when the median rate
// of a crosses b's: up to ceilingRechecks more rounds, each running both
// (order alternating), their samples appended to rows and the medians
// recomputed, stopping as soon as the median ratio is back at or below
// 1.0. A ceiling that is not a ceiling stays above 1.0 however often it
// is measured (and then fails the run, addRatio); a short sample that lost
// the machine to another process does not. The table shows every sample.
func recheckCeiling(rows []Row, runs []func() (Sample, error), a, b string) {
	ia, ib := -1, -1
	for i := range rows {
		switch rows[i].Name {
		case a:
			ia = i
		case b:
			ib = i
		}
	}
	if ia < 0 || ib < 0 {
		return
	}
	above := func() bool {
		rt := computeRatio("", rows, a, b, 0, true)
		return !rt.absent && rt.value > 1
	}
	for k := 0; k < ceilingRechecks && above(); k++ {
		logf("recheck %d: %s above its ceiling %s, measuring both again", k+1, a, b)
		order := []int{ia, ib}
		if k%2 == 1 {
			order = []int{ib, ia}
		}
		for _, i := range order {
			runtime.GC()
			s, err := runs[i]()
			if err != nil {
				rows[i].Err = err.Error()
				logf("%s: %v", rows[i].Name, err)
				return
			}
			logf("recheck %d %s: %.0f/s cpu %v/op", k+1, rows[i].Name, s.Rate, s.CPUPerOp)
			rows[i].Samples = append(rows[i].Samples, s)
			rows[i].Median = median(rows[i].Samples)
		}
	}
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
	var sum time.Duration
	var walk func(int)
	walk = func(p int) {
		// utime+stime counts in 10 ms ticks (USER_HZ = 100), including
		// threads that have exited; the live threads' schedstat counts
		// nanoseconds. The larger is the better figure.
		sum += max(time.Duration(procs[p].tick)*10*time.Millisecond, threadsCPU(p))
		for c, s := range procs {
			if s.ppid == p {
				walk(c)
			}
		}
	}
	walk(pid)
	return sum
}

// threadsCPU sums the on-CPU time (schedstat, ns) of pid's live threads.
func threadsCPU(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		var ns int64
		if _, err := fmt.Sscanf(string(b), "%d", &ns); err == nil {
			sum += time.Duration(ns)
		}
	}
	return sum
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
	fs.IntVar(&o.Handshakes, "handshakes", 2000, "DTLS handshakes per sample (200 lasts ~70 ms and swings ±20 % under load)")
	sessions := fs.String("sessions", "1000", "idle session counts for memory (comma-separated, e.g. 1000,10000)")
	devices := fs.String("devices", "2000,20000", "simulated devices for the CoAP relay (coap; comma-separated fleet sizes)")
	fs.IntVar(&o.InFlight, "coap-inflight", 64, "CoAP relay: requests in flight across the fleet")
	endpoints := fs.String("endpoints", "10000", "idle endpoint counts for the bridge memory (comma-separated, e.g. 10000,100000)")
	fs.IntVar(&o.StormSensors, "storm-sensors", 10000, "storm: sensors re-connecting after a bridge restart")
	fs.IntVar(&o.StormUplinks, "storm-uplinks", 200, "storm: edge uplinks re-connecting after a gateway restart")
	fs.StringVar(&o.StormIKE, "storm-ike", "aes128-sha1-modp2048", "storm: the edge uplinks' IKE proposal")
	fs.IntVar(&o.StormPar, "storm-par", 64, "storm: handshakes in flight per device process")
	fs.StringVar(&o.DTLSCases, "dtls-cases", "psk,ecdsa", "dtls: which handshake pairs (psk, ecdsa)")
	fs.DurationVar(&o.AttackDur, "attack-dur", 10*time.Second, "attack: how long the spoofed IKE flood runs")
	fs.IntVar(&o.AttackSites, "attack-sites", 10, "attack: real sites that set up during the flood")
	failover := fs.String("failover-edges", "200,1000", "failover: edge uplinks on two gateways, one killed (comma-separated counts)")
	fs.DurationVar(&o.SoakDur, "soak-dur", 30*time.Minute, "soak: how long e2e TestSoakLong cycles through outages (0: the short TestSoak)")
	fs.StringVar(&o.Only, "only", "", "run only these measurements (comma-separated): "+suiteNames())
	fs.StringVar(&o.Docs, "docs", "docs", "directory for BENCHMARKS.md and benchmarks.png (empty: don't write; with -only, written only when given)")
	fs.BoolVar(&o.Quick, "quick", false, "run every suite once, small and short (make test); writes no docs, fails on any failure")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	hc := fs.Int("helper-clients", 0, "internal: run as the client process of the memory measurement")
	hIKE := fs.String("helper-ike", "", "internal: gateway IKE address for -helper-clients")
	hNATT := fs.Int("helper-natt", 0, "internal: gateway NAT-T port for -helper-clients")
	fs.StringVar(&o.HeapProfile, "heapprofile", "", "endpoints: write a heap profile with all sessions up to this path (+ .count)")
	hcd := fs.String("helper-coap-devices", "", "internal: run as a device process of the CoAP relay measurement")
	hcs := fs.Bool("helper-coap-sink", false, "internal: run as the central sink process of the CoAP relay measurement")
	hd := fs.String("helper-devices", "", "internal: run as a device process of the bridge memory and storm measurements")
	hg := fs.Int("helper-gateway", 0, "internal: run our gateway with this many identities as the set-up measurement's server process")
	hBind := fs.String("helper-bind", "127.0.0.1", "internal: address for -helper-gateway")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	docsSet := false
	fs.Visit(func(f *flag.Flag) { docsSet = docsSet || f.Name == "docs" })
	if o.Only != "" && !docsSet {
		// Some suites alone must not replace the whole docs/BENCHMARKS.md
		// (a '-only tun6' run did); -docs DIR still writes what ran.
		o.Docs = ""
	}
	if *hd != "" {
		return helperDevices(*hd)
	}
	if *hcd != "" {
		return helperCoAPDevices(*hcd)
	}
	if *hcs {
		return helperCoAPSink()
	}
	if *hg > 0 {
		return helperGateway(*hg, *hBind)
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
	for _, s := range strings.Split(*failover, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d", &n); err == nil && n > 0 {
			o.FailoverEdges = append(o.FailoverEdges, n)
		}
	}
	for _, s := range strings.Split(*devices, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d", &n); err == nil && n > 0 {
			o.Devices = append(o.Devices, n)
		}
	}
	if o.Quick {
		quickOptions(o)
	}
	want := func(name string) bool {
		return o.Only == "" || slices.Contains(strings.Split(o.Only, ","), name)
	}
	rep := &Report{start: time.Now(), singleSample: o.Reps == 1}
	for _, s := range suites {
		if want(s.name) {
			t0 := time.Now()
			logf("== %s", s.name)
			s.run(o, rep)
			logf("== %s took %v", s.name, time.Since(t0).Round(100*time.Millisecond))
		}
	}
	if len(rep.bugs) > 0 {
		fmt.Fprintf(os.Stderr, "bench: FAILED: %d ratio(s) above their ceiling; nothing written:\n  %s\n", len(rep.bugs), strings.Join(rep.bugs, "\n  "))
		return 1
	}
	if o.Quick {
		if f := rep.failures(); len(f) > 0 {
			fmt.Fprintf(os.Stderr, "bench -quick: FAILED:\n  %s\n", strings.Join(f, "\n  "))
			return 1
		}
		logf("bench -quick: every suite ran (%v)", time.Since(rep.start).Round(time.Second))
	}
	if o.Docs != "" {
		if err := writeDocs(o, rep, args); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	return 0
}

func suiteNames() string {
	var n []string
	for _, s := range suites {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}
