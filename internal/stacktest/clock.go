// Package stacktest provides in-memory test doubles for the protocol stack: a
// fake uplink/clock.Clock advanced by hand, a lossy, reordering, duplicating
// datagram Pipe (a net.PacketConn; cf. wireguard-go bindtest, pion dpipe) and
// a goroutine-leak check.
package stacktest

import (
	"sort"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Clock is a fake clock.Clock. Time stands still until Advance is called;
// timers whose deadline has passed then fire in deadline order.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

// NewClock returns a fake clock set to a fixed, arbitrary instant.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the fake current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock is advanced past d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, ch: make(chan time.Time, 1), when: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d, firing every timer that expires on
// the way, in order, each with its own deadline as the delivered time.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
		var next *timer
		for _, t := range c.timers {
			if t.active && !t.when.After(end) {
				next = t
				break
			}
		}
		if next == nil {
			break
		}
		c.now = next.when
		next.active = false
		select {
		case next.ch <- next.when:
		default:
		}
	}
	c.now = end
	// Drop inactive timers so a long test does not accumulate them.
	live := c.timers[:0]
	for _, t := range c.timers {
		if t.active {
			live = append(live, t)
		}
	}
	c.timers = live
	c.mu.Unlock()
}

// Pending reports how many timers are armed.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.active {
			n++
		}
	}
	return n
}

type timer struct {
	c      *Clock
	ch     chan time.Time
	when   time.Time
	active bool // guarded by c.mu
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when = t.c.now.Add(d)
	t.active = true
	for _, o := range t.c.timers {
		if o == t {
			return was
		}
	}
	t.c.timers = append(t.c.timers, t)
	return was
}
