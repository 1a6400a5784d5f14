package coap

import (
	"testing"
	"time"
)

// fakeBox simulates a process whose handshakes each cost cost of CPU and
// finish lat after they start, with other work using other cores.
type fakeBox struct {
	t     time.Time
	cpu   time.Duration
	cost  time.Duration
	lat   time.Duration
	other float64 // cores used by other work
	due   []time.Time
	a     *admitter
}

func newFakeBox(budget float64, cost, lat time.Duration) *fakeBox {
	b := &fakeBox{t: time.Unix(1e9, 0), cost: cost, lat: lat}
	b.a = newAdmitter(budget, 4, func() time.Time { return b.t }, func() time.Duration { return b.cpu })
	return b
}

// run offers offered ClientHellos per millisecond for d and returns how
// many were admitted in the last second.
func (b *fakeBox) run(d time.Duration, offered int) (admittedLastSecond int) {
	end := b.t.Add(d)
	for b.t.Before(end) {
		b.t = b.t.Add(time.Millisecond)
		b.cpu += time.Duration(b.other * float64(time.Millisecond))
		for len(b.due) > 0 && !b.due[0].After(b.t) {
			b.due = b.due[1:]
			b.cpu += b.cost
			b.a.done()
		}
		for range offered {
			if b.a.admit(len(b.due)) {
				b.due = append(b.due, b.t.Add(b.lat))
				if end.Sub(b.t) < time.Second {
					admittedLastSecond++
				}
			}
		}
	}
	return admittedLastSecond
}

// TestAdmissionFollowsCPUBudget: a storm (10 ClientHellos per ms, far more
// than the box can handshake) is admitted at the rate the budget affords
// (budget / CPU per handshake), reached from the floor within a second,
// whatever the handshake's round-trip time, and with other work on the
// box the rate only errs low.
func TestAdmissionFollowsCPUBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget float64
		cost   time.Duration
		lat    time.Duration
		other  float64
		lo, hi int // admitted in the 2nd second
	}{
		// 1.6 cores / 400 µs = 4000 handshakes/s.
		{"fast LAN", 1.6, 400 * time.Microsecond, 5 * time.Millisecond, 0, 3600, 4400},
		{"slow link", 1.6, 400 * time.Microsecond, 300 * time.Millisecond, 0, 3000, 4400},
		// 0.8 cores / 400 µs = 2000/s.
		{"half the budget", 0.8, 400 * time.Microsecond, 5 * time.Millisecond, 0, 1800, 2200},
		{"cheaper handshakes", 0.8, 200 * time.Microsecond, 5 * time.Millisecond, 0, 3600, 4400},
		// Relayed traffic uses 0.4 cores: counted as handshake cost, so the
		// rate is lower than 4000/s, never higher.
		{"other work", 1.6, 400 * time.Microsecond, 5 * time.Millisecond, 0.4, 2000, 4000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBox(tc.budget, tc.cost, tc.lat)
			b.other = tc.other
			b.run(time.Second, 10)
			got := b.run(time.Second, 10)
			if got < tc.lo || got > tc.hi {
				t.Errorf("admitted %d handshakes in the 2nd second of the storm, want %d..%d (rate %.0f/s)", got, tc.lo, tc.hi, b.a.Rate())
			}
		})
	}
}

// TestAdmissionIdleAndOverload: below the budget every hello is admitted
// (once the rate is measured: the first window starts at the floor,
// 100/s, plus the minInflight handshakes always admitted); a box busy
// beyond the budget with no handshake finishing falls back to the floor;
// a negative budget admits everything; below minInflight pending
// handshakes nothing is refused.
func TestAdmissionIdleAndOverload(t *testing.T) {
	b := newFakeBox(1.6, 400*time.Microsecond, 5*time.Millisecond)
	offered := 0
	admitted := 0
	for i := range 3000 { // one hello every ms for 3 s: 1000/s, well below 4000/s
		b.t = b.t.Add(time.Millisecond)
		for len(b.due) > 0 && !b.due[0].After(b.t) {
			b.due = b.due[1:]
			b.cpu += b.cost
			b.a.done()
		}
		ok := b.a.admit(len(b.due))
		if ok {
			b.due = append(b.due, b.t.Add(b.lat))
		}
		if i >= 300 {
			offered++
			if ok {
				admitted++
			}
		}
	}
	if admitted != offered {
		t.Errorf("trickle of 1000/s, after 300 ms: admitted %d of %d", admitted, offered)
	}

	// Ramp the rate up with a storm, then stop every handshake from
	// finishing while other work takes 2 cores (> 1.6).
	b.run(2*time.Second, 10)
	if b.a.Rate() < 3000 {
		t.Fatalf("rate after the storm %.0f/s, want ≥ 3000", b.a.Rate())
	}
	b.lat = time.Hour
	b.other = 2
	b.run(time.Second, 10) // the handshakes already started finish; the burst is spent
	got := b.run(time.Second, 10)
	if got > int(admitFloor)+int(admitFloor*admitWindow.Seconds())+1 {
		t.Errorf("box over budget, nothing finishing: admitted %d in a second, want ≤ floor %v/s + one window's burst", got, admitFloor)
	}

	few := newFakeBox(1.6, time.Second, time.Hour) // 1 s of CPU each: rate → floor/10
	for i := range 4 {
		if !few.a.admit(i) {
			t.Errorf("hello %d refused with %d pending (< minInflight 4)", i, i)
		}
		few.a.tokens = 0
	}
	if few.a.admit(4) {
		t.Errorf("hello admitted with 4 pending and an empty bucket")
	}

	off := newFakeBox(-1, time.Millisecond, time.Hour)
	if n := off.run(100*time.Millisecond, 100); n != 100*100 {
		t.Errorf("negative budget admitted %d of %d", n, 100*100)
	}
}
