// Package procstat reads a process's resident memory from /proc, through
// prometheus/procfs, for the attack tests and benches that bound it: one
// reading (RSS) and a sampler that keeps the peak (WatchRSS).
package procstat

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
)

// Interval is how often a Watch samples.
const Interval = 50 * time.Millisecond

// RSS returns the resident set size of process pid in bytes; pid 0 is this
// process.
func RSS(pid int) (int64, error) {
	var p procfs.Proc
	var err error
	if pid == 0 {
		p, err = procfs.Self()
	} else {
		p, err = procfs.NewProc(pid)
	}
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return int64(st.ResidentMemory()), nil
}

// Watch samples a process's RSS every Interval until Stop.
type Watch struct {
	// Base is the first sample, taken by WatchRSS (0 if the process could
	// not be read).
	Base       int64
	peak       atomic.Int64
	stop, done chan struct{}
}

// WatchRSS starts sampling process pid (0: this process).
func WatchRSS(pid int) *Watch {
	w := &Watch{stop: make(chan struct{}), done: make(chan struct{})}
	w.Base, _ = RSS(pid)
	w.peak.Store(w.Base)
	go func() {
		defer close(w.done)
		t := time.NewTicker(Interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				if r, err := RSS(pid); err == nil && r > w.peak.Load() {
					w.peak.Store(r)
				}
			}
		}
	}()
	return w
}

// Stop ends the sampling (once; later calls return the same peak) and
// returns the peak RSS seen, at least Base.
func (w *Watch) Stop() int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return w.peak.Load()
}
