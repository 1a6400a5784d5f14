package coap

import (
	"math"
	"syscall"
	"time"
)

// Handshake admission by CPU budget (issue 19 item 4).
//
// After a bridge restart every sensor re-dials at once. The guard's fixed
// caps (MaxPendingHandshakes, MaxPendingPerSource) bound the state a peer
// can create, but say nothing about how fast the box can handshake: below
// them every cookie-verified ClientHello starts a handshake, and past what
// the CPU can finish the handshakes slow each other down until the
// devices' flight timers fire and they retransmit into a busier server.
//
// The admitter lets cookie-verified handshakes start at the rate the CPU
// budget affords, measured rather than configured: every window it reads
// the process's CPU time (getrusage) and counts the handshakes that
// finished, and sets the admission rate to
//
//	budget × finished / cpu
//
// the rate the budget (cores) affords if every CPU second the process
// spent went to the handshakes that finished: an upper bound on the cost
// per handshake, so with other work (relayed traffic) the estimate only
// errs towards admitting fewer. Admission spends a token from a bucket
// refilled at that rate (burst: one window's worth); before anything is
// measured the rate is a floor. A window lasts 100 ms and at least 16
// finished handshakes, at most 1 s. A window with no finished handshake
// keeps the rate (handshakes waiting on slow links cost no CPU), unless
// the process used more than the budget: then it falls back to the floor.
// Below minInflight pending handshakes (4 × GOMAXPROCS) every hello is
// admitted whatever the bucket holds: a few handshakes cannot overload the
// box, and a device must always get in. A ClientHello refused here is
// dropped silently (the device retransmits its cookie ClientHello on its
// flight timer, the cookie still valid) and counted (Stats.BudgetDeferred).
//
// The fixed caps stay as hard bounds before it: a spoofed flood cannot
// pass the cookie, and one address cannot take the table.

const (
	// DefaultHandshakeBudget is the share of GOMAXPROCS handshakes may use.
	DefaultHandshakeBudget = 0.8
	admitWindow            = 100 * time.Millisecond
	admitFloor             = 100.0 // handshakes/s admitted with nothing measured yet
	// A window closes after admitWindow once admitSample handshakes
	// finished in it (one handshake's CPU is too noisy a sample: a GC
	// cycle, a burst of relayed traffic), or after admitMaxWindow.
	admitSample    = 16
	admitMaxWindow = time.Second
)

// admitter is the rule; its caller (the guard) serialises every call.
type admitter struct {
	budget float64 // CPU seconds per second handshakes may use; ≤ 0: admit all
	// minInflight pending handshakes are always admitted.
	minInflight int
	now         func() time.Time
	cpu         func() time.Duration // the process's CPU time so far

	winStart time.Time
	cpu0     time.Duration
	finished int     // handshakes finished in the current window
	rate     float64 // admissions per second
	tokens   float64
	last     time.Time // last refill
}

func newAdmitter(budget float64, minInflight int, now func() time.Time, cpu func() time.Duration) *admitter {
	t := now()
	return &admitter{budget: budget, minInflight: minInflight, now: now, cpu: cpu, winStart: t, cpu0: cpu(), rate: admitFloor, tokens: admitFloor * admitWindow.Seconds(), last: t}
}

// admit reports whether one more handshake may start now, pending being
// the handshakes in progress.
func (a *admitter) admit(pending int) bool {
	if a.budget <= 0 {
		return true
	}
	t := a.now()
	a.roll(t)
	if dt := t.Sub(a.last).Seconds(); dt > 0 {
		a.tokens = math.Min(a.tokens+dt*a.rate, a.burst())
		a.last = t
	}
	if a.tokens >= 1 {
		a.tokens--
		return true
	}
	return pending < a.minInflight
}

// done records a handshake that finished (authenticated, failed or timed
// out).
func (a *admitter) done() {
	a.finished++
}

// Rate is the current admission rate (handshakes per second).
func (a *admitter) Rate() float64 { return a.rate }

func (a *admitter) burst() float64 { return math.Max(1, a.rate*admitWindow.Seconds()) }

// roll closes the measurement window if it is over and sets the rate.
func (a *admitter) roll(t time.Time) {
	w := t.Sub(a.winStart)
	if w < admitWindow || (a.finished < admitSample && w < admitMaxWindow) {
		return
	}
	c := a.cpu()
	used := (c - a.cpu0).Seconds()
	fin := float64(a.finished)
	switch {
	case fin > 0:
		if used > 0 {
			a.rate = math.Max(a.budget*fin/used, admitFloor/10)
		}
	case used/w.Seconds() > a.budget:
		a.rate = admitFloor
	}
	a.winStart, a.cpu0, a.finished = t, c, 0
}

// processCPU is the process's user + system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
