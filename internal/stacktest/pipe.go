package stacktest

import (
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Addr is a named in-memory address.
type Addr string

// Network returns "mem".
func (Addr) Network() string { return "mem" }

// String returns the name.
func (a Addr) String() string { return string(a) }

// Impairment describes what a Pipe does to datagrams in one direction.
// Percentages are of datagrams sent, 0 to 100.
type Impairment struct {
	LossPercent    int // datagrams dropped
	DupPercent     int // datagrams delivered twice
	ReorderPercent int // datagrams held back and delivered after the next one
}

// PipeConfig configures NewPipe.
type PipeConfig struct {
	AtoB, BtoA Impairment
	Seed       uint64 // seed of the impairment PRNG, for reproducible runs
	Queue      int    // datagrams buffered per direction; default 1024
}

// Stats counts what a Pipe did.
type Stats struct {
	Sent, Dropped, Duplicated, Reordered, Overflowed atomic.Uint64
}

// Pipe is a pair of connected in-memory datagram endpoints, A and B, each a
// net.PacketConn. Every datagram written on one end arrives (subject to the
// configured impairment) on the other; the address argument of WriteTo is
// ignored, and ReadFrom reports the other end's Addr.
type Pipe struct {
	A, B  *PipeConn
	Stats Stats
}

// NewPipe returns a connected pair named "a" and "b".
func NewPipe(cfg PipeConfig) *Pipe {
	if cfg.Queue == 0 {
		cfg.Queue = 1024
	}
	p := &Pipe{}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	var mu sync.Mutex // guards rng, shared by both directions
	p.A = &PipeConn{name: "a", in: make(chan []byte, cfg.Queue), done: make(chan struct{}), stats: &p.Stats, rngMu: &mu, rng: rng}
	p.B = &PipeConn{name: "b", in: make(chan []byte, cfg.Queue), done: make(chan struct{}), stats: &p.Stats, rngMu: &mu, rng: rng}
	p.A.peer, p.A.imp = p.B, cfg.AtoB
	p.B.peer, p.B.imp = p.A, cfg.BtoA
	return p
}

// PipeConn is one end of a Pipe.
type PipeConn struct {
	name  string
	peer  *PipeConn
	imp   Impairment
	in    chan []byte
	done  chan struct{}
	once  sync.Once
	stats *Stats

	rngMu *sync.Mutex
	rng   *rand.Rand

	heldMu sync.Mutex
	held   []byte // a datagram held back for reordering

	deadlineMu sync.Mutex
	deadline   time.Time
	dlChanged  chan struct{} // closed and replaced when the deadline changes
}

// ReadFrom reads the next datagram.
// A blocked ReadFrom wakes up when SetReadDeadline moves the deadline.
func (c *PipeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.deadlineMu.Lock()
		dl := c.deadline
		if c.dlChanged == nil {
			c.dlChanged = make(chan struct{})
		}
		changed := c.dlChanged
		c.deadlineMu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		select {
		case p := <-c.in:
			stopTimer(t)
			return copy(b, p), Addr(c.peer.name), nil
		case <-c.done:
			stopTimer(t)
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
			stopTimer(t)
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (c *PipeConn) roll(pct int) bool {
	if pct <= 0 {
		return false
	}
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return c.rng.IntN(100) < pct
}

// WriteTo sends b to the other end. It never blocks: a full queue drops the
// datagram (counted in Stats.Overflowed), as a real link would.
func (c *PipeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.stats.Sent.Add(1)
	if c.roll(c.imp.LossPercent) {
		c.stats.Dropped.Add(1)
		return len(b), nil
	}
	p := append([]byte(nil), b...)
	c.heldMu.Lock()
	if c.held == nil && c.roll(c.imp.ReorderPercent) {
		c.held = p
		c.heldMu.Unlock()
		c.stats.Reordered.Add(1)
		return len(b), nil
	}
	held := c.held
	c.held = nil
	c.heldMu.Unlock()
	c.deliver(p)
	if c.roll(c.imp.DupPercent) {
		c.stats.Duplicated.Add(1)
		c.deliver(p)
	}
	if held != nil {
		c.deliver(held)
	}
	return len(b), nil
}

func (c *PipeConn) deliver(p []byte) {
	select {
	case c.peer.in <- p:
	default:
		c.stats.Overflowed.Add(1)
	}
}

// Close closes this end; reads on it return net.ErrClosed.
func (c *PipeConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// LocalAddr returns this end's name.
func (c *PipeConn) LocalAddr() net.Addr { return Addr(c.name) }

// SetDeadline sets the read deadline (writes never block).
func (c *PipeConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline sets the deadline for ReadFrom.
func (c *PipeConn) SetReadDeadline(t time.Time) error {
	c.deadlineMu.Lock()
	c.deadline = t
	if c.dlChanged != nil {
		close(c.dlChanged)
	}
	c.dlChanged = make(chan struct{})
	c.deadlineMu.Unlock()
	return nil
}

// SetWriteDeadline is a no-op: writes never block.
func (c *PipeConn) SetWriteDeadline(time.Time) error { return nil }
