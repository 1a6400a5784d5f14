// Package metrics publishes the gateway's counters in the Prometheus text
// exposition format (version 0.0.4) on /metrics, and holds the gateway's
// own session-level counters (Gateway). Collectors are functions called at
// scrape time, so the protocol packages keep plain atomic Stats structs and
// no Prometheus dependency (STYLE §7).
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Kind is a metric type.
type Kind string

// Metric types.
const (
	Counter Kind = "counter"
	Gauge   Kind = "gauge"
)

type sample struct {
	labels string
	value  float64
}

type family struct {
	help    string
	kind    Kind
	samples []sample
}

// Writer accumulates samples during one scrape.
type Writer struct {
	fams map[string]*family
}

// Add records one sample. labels are name/value pairs.
func (w *Writer) Add(name string, kind Kind, help string, value float64, labels ...string) {
	f := w.fams[name]
	if f == nil {
		f = &family{help: help, kind: kind}
		w.fams[name] = f
	}
	f.samples = append(f.samples, sample{labels: formatLabels(labels), value: value})
}

func formatLabels(kv []string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Collector adds samples to a scrape.
type Collector func(w *Writer)

// Registry is a set of collectors; it serves /metrics.
type Registry struct {
	mu         sync.Mutex
	collectors []Collector
}

// Register adds a collector.
func (r *Registry) Register(c Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, c)
}

// WriteTo writes the exposition of all collectors, families sorted by name.
func (r *Registry) WriteTo(out io.Writer) (int64, error) {
	r.mu.Lock()
	cs := append([]Collector(nil), r.collectors...)
	r.mu.Unlock()
	w := &Writer{fams: map[string]*family{}}
	for _, c := range cs {
		c(w)
	}
	names := make([]string, 0, len(w.fams))
	for n := range w.fams {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f := w.fams[n]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", n, helpEscaper.Replace(f.help), n, f.kind)
		sort.SliceStable(f.samples, func(i, j int) bool { return f.samples[i].labels < f.samples[j].labels })
		for _, s := range f.samples {
			fmt.Fprintf(&b, "%s%s %s\n", n, s.labels, formatValue(s.value))
		}
	}
	nw, err := io.WriteString(out, b.String())
	return int64(nw), err
}

// ServeHTTP serves the exposition.
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = r.WriteTo(w)
}
