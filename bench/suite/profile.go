package suite

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// A goal the bench misses must come with where the time goes (issue 19:
// "BENCHMARKS.md shows the profile and the next bottleneck by name"): a
// suite that misses one runs one more sample under the CPU profiler and
// notes the process's CPU by area, largest first.

// area is one share of a profile.
type area struct {
	name  string
	share float64 // of the profiled CPU, 0..1
}

// profileAreas runs fn under the CPU profiler and sums the CPU samples by
// area (areaOf). With label set ("key=value"), only samples carrying that
// pprof label count (goroutines started under pprof.Do inherit it; the
// garbage collector's workers do not). It fails when a profile is already
// running (bench -cpuprofile).
func profileAreas(label string, fn func()) ([]area, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, err
	}
	fn()
	pprof.StopCPUProfile()
	p, err := profile.Parse(&buf)
	if err != nil {
		return nil, err
	}
	return summarize(p, label), nil
}

// summarize sums p's CPU samples by area.
func summarize(p *profile.Profile, label string) []area {
	vi := len(p.SampleType) - 1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	key, val, _ := strings.Cut(label, "=")
	sums := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		if key != "" && !hasLabel(s, key, val) {
			continue
		}
		v := s.Value[vi]
		sums[areaOf(stackOf(s))] += v
		total += v
	}
	out := make([]area, 0, len(sums))
	for n, v := range sums {
		if total > 0 {
			out = append(out, area{n, float64(v) / float64(total)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].share != out[j].share {
			return out[i].share > out[j].share
		}
		return out[i].name < out[j].name
	})
	return out
}

func hasLabel(s *profile.Sample, key, val string) bool {
	for _, v := range s.Label[key] {
		if v == val {
			return true
		}
	}
	return false
}

// stackOf is a sample's function names, leaf first.
func stackOf(s *profile.Sample) []string {
	var fs []string
	for _, loc := range s.Location {
		for _, ln := range loc.Line {
			if ln.Function != nil {
				fs = append(fs, ln.Function.Name)
			}
		}
	}
	return fs
}

// areaOf names where a sample's CPU went: the runtime's own work (garbage
// collection, allocation, scheduling, stack growth), system calls, or the
// library or package of the innermost frame outside the standard library
// (crypto of the standard library is named as such).
func areaOf(stack []string) string {
	for _, f := range stack {
		switch {
		case strings.HasPrefix(f, "runtime.gcBgMarkWorker"), strings.HasPrefix(f, "runtime.gcDrain"),
			strings.HasPrefix(f, "runtime.markroot"), strings.HasPrefix(f, "runtime.bgsweep"), strings.HasPrefix(f, "runtime.bgscavenge"):
			return "garbage collection"
		case strings.HasPrefix(f, "runtime.mallocgc"), strings.HasPrefix(f, "runtime.newobject"), strings.HasPrefix(f, "runtime.makeslice"),
			strings.HasPrefix(f, "runtime.growslice"):
			return "allocation"
		case strings.HasPrefix(f, "runtime.newstack"), strings.HasPrefix(f, "runtime.copystack"), strings.HasPrefix(f, "runtime.morestack"):
			return "goroutine stack growth"
		case strings.HasPrefix(f, "syscall."), strings.HasPrefix(f, "internal/runtime/syscall."), strings.HasPrefix(f, "golang.org/x/sys/unix."),
			strings.HasPrefix(f, "internal/poll.") && strings.Contains(f, "Syscall"):
			return "system calls"
		case strings.HasPrefix(f, "runtime.schedule"), strings.HasPrefix(f, "runtime.findRunnable"), strings.HasPrefix(f, "runtime.park_m"),
			strings.HasPrefix(f, "runtime.goready"), strings.HasPrefix(f, "runtime.ready"), strings.HasPrefix(f, "runtime.futex"):
			return "scheduler (goroutine hand-offs)"
		case strings.HasPrefix(f, "crypto/"):
			return "crypto (standard library)"
		}
		if owner := ownerOf(f); owner != "" {
			return owner
		}
	}
	return "runtime, other"
}

// ownerOf names the module or package of a non-standard-library function:
// a third-party library by its repository, ours by its package path.
func ownerOf(fn string) string {
	const ours = "github.com/fleetgate/fleetgate/"
	if strings.HasPrefix(fn, ours) {
		p := strings.TrimPrefix(fn, ours)
		if i := strings.Index(p, "."); i > 0 {
			p = p[:i]
		}
		return "ours: " + p
	}
	first, _, slash := strings.Cut(fn, "/")
	if !slash || !strings.Contains(first, ".") {
		return "" // the standard library
	}
	n := 2 // gvisor.dev/gvisor
	if first == "github.com" || first == "golang.org" {
		n = 3 // github.com/pion/dtls, golang.org/x/net
	}
	parts := strings.SplitN(fn, "/", n+1)
	if len(parts) > n {
		parts = parts[:n]
	}
	if last := parts[len(parts)-1]; strings.Contains(last, ".") && len(parts) == n && !strings.Contains(fn[len(strings.Join(parts, "/")):], "/") {
		parts[len(parts)-1], _, _ = strings.Cut(last, ".") // the function follows the package name
	}
	return strings.Join(parts, "/")
}

// describeAreas is the note line: the areas over 3 %, and the largest one
// outside the garbage collector and the system calls as the next
// bottleneck to work on (those two follow from the others).
func describeAreas(areas []area) string {
	var b strings.Builder
	next := ""
	for _, a := range areas {
		if a.share >= 0.03 {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %.0f %%", a.name, 100*a.share)
		}
		if next == "" && a.name != "garbage collection" && a.name != "system calls" && a.name != "allocation" {
			next = a.name
		}
	}
	if next != "" {
		fmt.Fprintf(&b, "; next bottleneck by name: %s", next)
	}
	return b.String()
}

// medianRate is the median rate of the named side's rows (0 if none ran).
func medianRate(rows []Row, name string) float64 {
	for _, r := range rows {
		if r.Name == name && r.Err == "" {
			return r.Median.Rate
		}
	}
	return 0
}

// areaCosts runs one more sample of run under the CPU profiler and
// returns the CPU per operation of each area: its share of the profile
// times the sample's CPU per op.
func areaCosts(run func() (Sample, error)) (map[string]time.Duration, error) {
	var s Sample
	var rerr error
	areas, err := profileAreas("", func() { s, rerr = run() })
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Duration, len(areas))
	for _, a := range areas {
		out[a.name] = time.Duration(a.share * float64(s.CPUPerOp))
	}
	return out, nil
}

// describeExtra names where a spends more CPU per operation than b (its
// ceiling: the same work and less), largest first, the areas that add
// 20 ns or more: what a would have to shed to reach b.
func describeExtra(a, b map[string]time.Duration) string {
	type d struct {
		name string
		ns   time.Duration
	}
	var ds []d
	var total time.Duration
	for n, v := range a {
		total += v
		if x := v - b[n]; x >= 20*time.Nanosecond {
			ds = append(ds, d{n, x})
		}
	}
	for _, v := range b {
		total -= v
	}
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].ns != ds[j].ns {
			return ds[i].ns > ds[j].ns
		}
		return ds[i].name < ds[j].name
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s more CPU per packet in all", total.Round(time.Nanosecond))
	for i, x := range ds {
		if i == 0 {
			sb.WriteString(": ")
		} else {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s +%s", x.name, x.ns.Round(time.Nanosecond))
	}
	return sb.String()
}
