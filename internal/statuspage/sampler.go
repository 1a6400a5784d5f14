package statuspage

import (
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/internal/fleetview"
)

// DefaultSamples is how many points each chart series keeps (at the
// default 5 s interval, half an hour).
const DefaultSamples = 360

// Sampler keeps bounded chart series: each Add appends one point to every
// series and forgets the oldest past the capacity. Safe for concurrent
// use.
type Sampler struct {
	interval time.Duration
	capacity int

	mu     sync.Mutex
	names  []string
	units  []string
	points [][]fleetview.Point // per series, oldest first, len <= capacity
}

// SeriesSpec names one series and its unit (series of one unit share a
// chart).
type SeriesSpec struct{ Name, Unit string }

// NewSampler returns a sampler of the given series; capacity <= 0 means
// DefaultSamples.
func NewSampler(interval time.Duration, capacity int, series ...SeriesSpec) *Sampler {
	if capacity <= 0 {
		capacity = DefaultSamples
	}
	s := &Sampler{interval: interval, capacity: capacity, points: make([][]fleetview.Point, len(series))}
	for _, sp := range series {
		s.names = append(s.names, sp.Name)
		s.units = append(s.units, sp.Unit)
	}
	return s
}

// Add records one sample: vals in the order of the series (missing values
// count as 0, extra ones are ignored).
func (s *Sampler) Add(t time.Time, vals ...float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.points {
		v := 0.0
		if i < len(vals) {
			v = vals[i]
		}
		p := s.points[i]
		if len(p) == s.capacity {
			copy(p, p[1:])
			p = p[:len(p)-1]
		}
		s.points[i] = append(p, fleetview.Point{T: t.UnixMilli(), V: v})
	}
}

// Charts returns a copy of every series.
func (s *Sampler) Charts() fleetview.Charts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := fleetview.Charts{IntervalSeconds: s.interval.Seconds()}
	for i, n := range s.names {
		c.Series = append(c.Series, fleetview.Series{Name: n, Unit: s.units[i], Points: append([]fleetview.Point(nil), s.points[i]...)})
	}
	return c
}

// Rate is the per-second rate between two counter readings dt apart; a
// counter that went backwards (a session ended, a counter reset) gives 0,
// not a negative spike.
func Rate(prev, cur uint64, dt time.Duration) float64 {
	if cur < prev || dt <= 0 {
		return 0
	}
	return float64(cur-prev) / dt.Seconds()
}

// Ring is a bounded list keeping the newest Cap items. Safe for
// concurrent use.
type Ring[T any] struct {
	mu    sync.Mutex
	cap   int
	items []T // oldest first
	total uint64
}

// NewRing returns a ring of capacity n (at least 1).
func NewRing[T any](n int) *Ring[T] {
	if n < 1 {
		n = 1
	}
	return &Ring[T]{cap: n}
}

// Add appends v, dropping the oldest item when full.
func (r *Ring[T]) Add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if len(r.items) == r.cap {
		copy(r.items, r.items[1:])
		r.items = r.items[:len(r.items)-1]
	}
	r.items = append(r.items, v)
}

// Newest returns the items, newest first, and how many were ever added.
func (r *Ring[T]) Newest() ([]T, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]T, len(r.items))
	for i, v := range r.items {
		out[len(r.items)-1-i] = v
	}
	return out, r.total
}

// Cap returns the capacity.
func (r *Ring[T]) Cap() int { return r.cap }
