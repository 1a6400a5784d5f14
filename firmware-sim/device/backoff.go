package device

import (
	"math/rand/v2"
	"time"
)

// Backoff is exponential reconnection backoff with jitter: attempt n waits
// a random duration in [d/2, d] where d = min(Max, Min·2ⁿ) ("equal jitter"),
// so a fleet that lost its bridge does not reconnect in lockstep.
type Backoff struct {
	Min, Max time.Duration
	n        int
	rng      *rand.Rand
}

// NewBackoff returns a Backoff using rng for jitter.
func NewBackoff(min, max time.Duration, rng *rand.Rand) *Backoff {
	return &Backoff{Min: min, Max: max, rng: rng}
}

// Next returns the next delay and advances the attempt count.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	b.n++
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(b.rng.Int64N(int64(half)+1))
}

// Reset starts again from Min after a success.
func (b *Backoff) Reset() { b.n = 0 }
