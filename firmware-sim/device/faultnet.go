package device

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/report"
)

// FaultConn is the simulator's own UDP socket wrapper (a net.PacketConn
// for pion/dtls): it drops datagrams with a given probability in each
// direction, drops everything inbound while the radio is asleep, and can
// rebind to a new source port mid-session as a NAT would.
type FaultConn struct {
	bindIP net.IP
	listen ListenFunc
	loss   float64 // probability 0..1
	stats  *report.Stats

	rngMu sync.Mutex // guards rng
	rng   *rand.Rand

	mu       sync.Mutex // guards cur, gen and the deadlines
	cur      *net.UDPConn
	gen      uint64
	rdl, wdl time.Time

	asleep atomic.Bool
	closed atomic.Bool
}

// ListenFault opens a UDP socket on bindIP (nil: any) with a random port.
// lossPercent in [0,100) drops datagrams in each direction; drops are
// counted in st (DroppedOut, DroppedIn).
func ListenFault(bindIP net.IP, lossPercent float64, seed uint64, st *report.Stats) (*FaultConn, error) {
	return listenFault(nil, bindIP, lossPercent, seed, st)
}

// ListenFunc opens the device's UDP socket (Config.Listen).
type ListenFunc func(laddr *net.UDPAddr) (*net.UDPConn, error)

func listenUDP(laddr *net.UDPAddr) (*net.UDPConn, error) { return net.ListenUDP("udp", laddr) }

func listenFault(listen ListenFunc, bindIP net.IP, lossPercent float64, seed uint64, st *report.Stats) (*FaultConn, error) {
	if listen == nil {
		listen = listenUDP
	}
	c := &FaultConn{bindIP: bindIP, listen: listen, loss: lossPercent / 100, stats: st, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	u, err := listen(&net.UDPAddr{IP: bindIP})
	if err != nil {
		return nil, err
	}
	c.cur = u
	return c, nil
}

func (c *FaultConn) drop() bool {
	if c.loss <= 0 {
		return false
	}
	c.rngMu.Lock()
	defer c.rngMu.Unlock()
	return c.rng.Float64() < c.loss
}

func (c *FaultConn) current() (*net.UDPConn, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.gen
}

// ReadFrom reads the next datagram that survives loss and sleep. A read
// blocked on a socket replaced by Rebind continues on the new socket.
func (c *FaultConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		u, gen := c.current()
		n, addr, err := u.ReadFrom(p)
		if err != nil {
			if c.closed.Load() {
				return 0, nil, net.ErrClosed
			}
			if _, g := c.current(); g != gen {
				continue // rebound: read from the new socket
			}
			return n, addr, err
		}
		if c.asleep.Load() || c.drop() {
			if c.stats != nil {
				c.stats.DroppedIn.Add(1)
			}
			continue
		}
		return n, addr, nil
	}
}

// WriteTo sends p unless injected loss drops it (then it reports success,
// as a lossy radio link would).
func (c *FaultConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.asleep.Load() || c.drop() {
		if c.stats != nil {
			c.stats.DroppedOut.Add(1)
		}
		return len(p), nil
	}
	u, _ := c.current()
	return u.WriteTo(p, addr)
}

// Rebind moves to a new socket (new source port), as a NAT rebinding does;
// the old socket is closed.
func (c *FaultConn) Rebind() error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	u, err := c.listen(&net.UDPAddr{IP: c.bindIP})
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.cur
	c.cur = u
	c.gen++
	if !c.rdl.IsZero() {
		_ = u.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		_ = u.SetWriteDeadline(c.wdl)
	}
	c.mu.Unlock()
	if c.stats != nil {
		c.stats.Rebinds.Add(1)
	}
	return old.Close()
}

// SetAsleep turns the radio off (true: every datagram in either direction
// is dropped) or on.
func (c *FaultConn) SetAsleep(v bool) { c.asleep.Store(v) }

// Close closes the current socket.
func (c *FaultConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	u, _ := c.current()
	return u.Close()
}

// LocalAddr returns the current socket's address.
func (c *FaultConn) LocalAddr() net.Addr {
	u, _ := c.current()
	return u.LocalAddr()
}

// SetDeadline sets both deadlines.
func (c *FaultConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// SetReadDeadline sets the read deadline, kept across Rebind.
func (c *FaultConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	return c.cur.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, kept across Rebind.
func (c *FaultConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	return c.cur.SetWriteDeadline(t)
}

var _ net.PacketConn = (*FaultConn)(nil)
