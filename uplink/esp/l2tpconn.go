package esp

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Addr is the net.Addr the L2TP PacketConn reports and accepts: one peer
// (a pair of SAs and their successors after rekeys) and the peer's inner UDP
// port. String is stable for the peer's lifetime, across rekeys and NAT
// rebinding, and unique per peer, so L2TP can key tunnels by
// (addr.String(), tunnel ID) even when several clients behind one NAT all
// use source port 1701.
type Addr struct {
	peer *Peer
	port uint16
	s    string
}

// Network returns "esp".
func (a *Addr) Network() string { return "esp" }

// String returns "esp:<peer id>/<peer name or first outer address>:<inner port>".
func (a *Addr) String() string { return a.s }

// Peer returns the IPsec peer.
func (a *Addr) Peer() *Peer { return a.peer }

// Port returns the peer's inner UDP port.
func (a *Addr) Port() uint16 { return a.port }

// Outer returns the peer's current outer address.
func (a *Addr) Outer() *net.UDPAddr { return net.UDPAddrFromAddrPort(a.peer.Remote()) }

type inbound struct {
	buf  *[]byte
	n    int
	addr *Addr
}

// l2tpConn is the PacketConn L2TP uses over the transport.
type l2tpConn struct {
	t      *Transport
	ch     chan inbound
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	kick     chan struct{} // wakes a blocked ReadFrom when the deadline moves

	// handler, when set (Transport.SetL2TPHandler), gets every opened
	// payload on the socket's reader goroutine instead of the queue.
	handler atomic.Pointer[func(b []byte, from *Addr)]
	done    atomic.Bool // closed: the handler gets nothing more
}

func (c *l2tpConn) close() { c.once.Do(func() { c.done.Store(true); close(c.closed) }) }

// deliver hands an opened payload to the handler, or copies it into a
// pooled buffer and queues it for ReadFrom.
func (c *l2tpConn) deliver(b []byte, a *Addr) {
	if h := c.handler.Load(); h != nil {
		if !c.done.Load() { // the view was closed (the L2TP endpoint is gone)
			(*h)(b, a)
		}
		return
	}
	var bp *[]byte
	if len(b) <= bufSize {
		bp = c.t.bufPool.Get().(*[]byte)
	} else {
		nb := make([]byte, len(b))
		bp = &nb
	}
	n := copy(*bp, b)
	select {
	case c.ch <- inbound{buf: bp, n: n, addr: a}:
	default:
		c.t.stats.QueueDrops.Add(1)
		c.t.bufPool.Put(bp)
	}
}

// ReadFrom returns the next L2TP datagram and its peer address.
func (c *l2tpConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		select {
		case <-c.closed:
			return 0, nil, c.opErr("read", net.ErrClosed)
		default:
		}
		c.mu.Lock()
		dl := c.deadline
		c.mu.Unlock()
		var timeout <-chan time.Time
		var tm *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, c.opErr("read", os.ErrDeadlineExceeded)
			}
			// Timers are pooled: L2TP sets a deadline on every read.
			if v := timerPool.Get(); v != nil {
				tm = v.(*time.Timer)
				tm.Reset(d)
			} else {
				tm = time.NewTimer(d)
			}
			timeout = tm.C
		}
		select {
		case in := <-c.ch:
			stopTimer(tm)
			n := copy(p, (*in.buf)[:in.n])
			if cap(*in.buf) == bufSize {
				c.t.bufPool.Put(in.buf)
			}
			return n, in.addr, nil
		case <-c.closed:
			stopTimer(tm)
			return 0, nil, c.opErr("read", net.ErrClosed)
		case <-timeout:
			timerPool.Put(tm) // fired and drained: reusable
			return 0, nil, c.opErr("read", os.ErrDeadlineExceeded)
		case <-c.kick:
			// The deadline changed while we waited: look again.
			stopTimer(tm)
		}
	}
}

// timerPool holds stopped read-deadline timers. Since Go 1.23 a stopped
// or reset timer never delivers a stale value, so reuse is safe.
var timerPool sync.Pool

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
		timerPool.Put(t)
	}
}

// WriteTo wraps p in a UDP header (our L2TP port to the peer's inner
// port, checksum 0, which RFC 768 allows over IPv4 and RFC 3948 §3.1.2
// tolerates in transport mode) and sends it sealed with the peer's current
// outbound SA.
func (c *l2tpConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, c.opErr("write", net.ErrClosed)
	default:
	}
	a, ok := addr.(*Addr)
	if !ok || a.peer.t != c.t {
		return 0, c.opErr("write", ErrAddr)
	}
	sa := a.peer.out.Load()
	if sa == nil {
		c.t.stats.NoSA.Add(1)
		return 0, c.opErr("write", ErrNoSA)
	}
	ulen := UDPHeaderLen + len(p)
	if ulen > 0xFFFF {
		return 0, c.opErr("write", ErrTooBig)
	}
	off := sa.PayloadOffset()
	need := off + ulen + sa.Overhead(ulen)
	var buf []byte
	var bp *[]byte
	if need <= bufSize {
		bp = c.t.bufPool.Get().(*[]byte)
		buf = *bp
	} else {
		buf = make([]byte, need)
	}
	u := buf[off : off+ulen]
	binary.BigEndian.PutUint16(u[0:2], a.peer.localPort)
	binary.BigEndian.PutUint16(u[2:4], a.port)
	binary.BigEndian.PutUint16(u[4:6], uint16(ulen))
	u[6], u[7] = 0, 0
	copy(u[UDPHeaderLen:], p)
	pkt, err := sa.Seal(buf[:0], u, NextHeaderUDP)
	if err != nil {
		if bp != nil {
			c.t.bufPool.Put(bp)
		}
		return 0, c.opErr("write", err)
	}
	if out := c.t.natt.out; out != nil && bp != nil {
		// Batched: the sender owns bp from here and counts failures of
		// queued datagrams in SendErrors.
		err = out.send(outPkt{buf: bp, n: len(pkt), to: a.peer.Remote()})
	} else {
		_, err = c.t.natt.writeTo(pkt, a.peer.Remote())
		if bp != nil {
			c.t.bufPool.Put(bp)
		}
	}
	if err != nil {
		c.t.stats.SendErrors.Add(1)
		return 0, c.opErr("write", err)
	}
	c.t.stats.ESPOut.Add(1)
	if !a.peer.sent.Load() { // avoid dirtying the cache line on every packet
		a.peer.sent.Store(true)
	}
	return len(p), nil
}

func (c *l2tpConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "esp", Source: c.LocalAddr(), Err: err}
}

// Close closes only the PacketConn view; the Transport owns the sockets.
func (c *l2tpConn) Close() error { c.close(); return nil }

// LocalAddr returns the NAT-T socket address.
func (c *l2tpConn) LocalAddr() net.Addr { return c.t.natt.pc.LocalAddr() }

// SetDeadline sets the read deadline (writes never block).
func (c *l2tpConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes ReadFrom return os.ErrDeadlineExceeded after t,
// including a ReadFrom already blocked.
func (c *l2tpConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline is accepted and ignored: writes never block.
func (c *l2tpConn) SetWriteDeadline(time.Time) error { return nil }
