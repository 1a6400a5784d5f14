// Package link holds the small interfaces the protocol stack consumes: a
// Clock for timers, so state machines never call time.Now, and the datagram
// transport every layer is plugged into (net.PacketConn).
//
// Production code uses System; tests use linktest.Clock and linktest.Pipe.
package link

import (
	"net"
	"time"
)

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

// PacketConn is the datagram transport a protocol layer reads from and
// writes to. net.UDPConn, gVisor's gonet.UDPConn, the ESP layer's L2TP
// transport and linktest.Pipe all satisfy it. Addresses returned by ReadFrom
// must be usable as WriteTo destinations and, for demultiplexing, comparable
// by their String form together with their Network.
type PacketConn = net.PacketConn

// System is the real wall clock.
var System Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return &systemTimer{t: time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (s *systemTimer) C() <-chan time.Time        { return s.t.C }
func (s *systemTimer) Stop() bool                 { return s.t.Stop() }
func (s *systemTimer) Reset(d time.Duration) bool { return s.t.Reset(d) }
