// Package clock is the time source of the protocol stack: state machines take
// a Clock for timers and never call time.Now, so retransmission and keepalive
// logic runs on a fake clock in tests. Every layer is plugged into a
// net.PacketConn (a UDP socket, gVisor's gonet.UDPConn, the ESP layer's L2TP
// transport or an in-memory pipe).
//
// Production code uses System; tests use stacktest.Clock and stacktest.Pipe.
package clock

import "time"

// Clock tells the time and makes timers. Protocol code takes a Clock instead
// of calling time.Now, so that retransmission and keepalive logic can be
// driven by a fake clock in tests (cf. gVisor tcpip.Clock).
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that delivers the time on C after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the subset of *time.Timer the stack needs, as an interface so a
// fake clock can implement it.
type Timer interface {
	// C is the channel the expiry time is delivered on (buffered, one slot).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was active.
	Stop() bool
	// Reset changes the timer to expire after d; it reports whether the
	// timer had been active.
	Reset(d time.Duration) bool
}

// System is the real wall clock.
var System Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return &systemTimer{t: time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (s *systemTimer) C() <-chan time.Time        { return s.t.C }
func (s *systemTimer) Stop() bool                 { return s.t.Stop() }
func (s *systemTimer) Reset(d time.Duration) bool { return s.t.Reset(d) }
