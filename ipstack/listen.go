package ipstack

// The UDP fast path to local listeners. gVisor's inbound path costs about
// 2.5 µs per datagram (PacketBuffer, header views, address lookup, the
// endpoint's receive queue, gonet's waiter): on the userspace gateway that
// was most of what our forwarding cost above ESP (bench -suite forwarding,
// profile in docs/BENCHMARKS.md and issue 21's note). A whole,
// unfragmented UDP datagram to an assigned address with a listener from
// ListenUDP is parsed here (udp4.go: both checksums) and queued to the
// listener; everything else (fragments, bad checksums, options that do not
// parse, broadcast, other protocols, ports nobody listens on) still goes
// to gVisor exactly as before. The listener keeps its gVisor socket: it
// holds the port, sends (routing, fragmentation) and receives what gVisor
// still delivers (reassembled fragments) through a pump goroutine.

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/deadline"

	"golang.org/x/sys/cpu"
)

// ListenQueueLen bounds the datagrams a UDP listener holds unread (fast
// path and gVisor's deliveries together); beyond it datagrams are dropped
// and counted in Stats.UDPQueueFull.
const ListenQueueLen = 512

// rleftEvery: how often (in reads) the reader publishes what is left of
// its batch; a store per read would bounce its cache line to the data path
// on every datagram.
const rleftEvery = 16

// listenDatagram is one queued datagram; buf comes from listenBufs.
type listenDatagram struct {
	from netip.AddrPort
	buf  *[]byte
}

// listenBufs recycles the listeners' datagram copies.
var listenBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// putListenBuf recycles bp unless a reassembled datagram grew it.
func putListenBuf(bp *[]byte) {
	if cap(*bp) <= 4096 {
		listenBufs.Put(bp)
	}
}

// udpListener is an unconnected UDP socket of the stack: the gVisor conn
// plus the fast-path queue.
//
// The queue is a slice the data path appends to under mu and the reader
// swaps out whole: one lock per batch on the reading side, and a wake-up
// only when the reader is parked. A channel costs a lock per datagram on
// both sides, which the two goroutines fought over on every packet (on a
// 2-core gateway forwarding 1400-byte UDP, runtime.lock in chansend was a
// tenth of all CPU: bench forwarding profile, issue 21).
type udpListener struct {
	st    *Stack
	key   netip.AddrPort // as registered: unspecified address = every local address
	gc    net.PacketConn // gVisor socket (sends, and what gVisor delivers)
	done  chan struct{}
	once  sync.Once
	pumpd chan struct{}

	// The data path's side, the reader's side and rleft each have a cache
	// line of their own: the reader writes rpos on every read, and a
	// shared line would bounce to the data path's core for every datagram
	// it queues (false sharing; it showed as the lock's CAS in profiles).
	_      cpu.CacheLinePad
	mu     sync.Mutex
	q      []listenDatagram // queued, in order
	parked bool             // the reader waits on wake
	closed bool
	wake   chan struct{} // capacity 1

	_      cpu.CacheLinePad
	rmu    sync.Mutex       // serialises readers (as net.UDPConn's fd does)
	rbatch []listenDatagram // the reader's batch, taken from q
	rpos   int              // next in rbatch
	_      cpu.CacheLinePad
	// rleft is what is left of the reader's batch, published when the
	// batch is taken and every rleftEvery reads: the queue's bound counts
	// it (up to rleftEvery-1 datagrams already read still count while the
	// reader is inside a batch; none once it has read the whole batch).
	rleft atomic.Int32
	_     cpu.CacheLinePad

	rdl   *deadline.Deadline // read deadline
	rdlOn atomic.Bool        // a read deadline is set (rdl may fire)
}

// listenFast registers a listener on addr over the gVisor socket gc.
func (st *Stack) listenFast(addr netip.AddrPort, gc net.PacketConn) *udpListener {
	l := &udpListener{st: st, key: addr, gc: gc, wake: make(chan struct{}, 1),
		done: make(chan struct{}), pumpd: make(chan struct{}), rdl: deadline.New()}
	st.rt.mu.Lock()
	st.rt.listeners[addr] = l
	st.rt.publishListeners()
	st.rt.mu.Unlock()
	go l.pump()
	return l
}

// pump moves what gVisor delivers to the socket into the queue.
func (l *udpListener) pump() {
	defer close(l.pumpd)
	b := make([]byte, 65536)
	for {
		n, from, err := l.gc.ReadFrom(b)
		if err != nil {
			return
		}
		bp := listenBufs.Get().(*[]byte)
		*bp = append((*bp)[:0], b[:n]...)
		var ap netip.AddrPort
		if ua, ok := from.(*net.UDPAddr); ok {
			ap = ua.AddrPort()
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if !l.enqueue(ap, bp) {
			putListenBuf(bp)
		}
	}
}

// publishListeners republishes the listeners for the packet path; mu is
// held.
func (r *routing) publishListeners() {
	m := make(map[netip.AddrPort]*udpListener, len(r.listeners))
	for a, l := range r.listeners {
		m[a] = l
	}
	r.lmap.Store(&m)
	r.nlisten.Store(int32(len(m)))
}

// enqueue queues a datagram without blocking; false: queue full or closed
// (the caller keeps bp).
func (l *udpListener) enqueue(from netip.AddrPort, bp *[]byte) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	if len(l.q)+int(l.rleft.Load()) >= ListenQueueLen {
		l.mu.Unlock()
		l.st.Stats.UDPQueueFull.Add(1)
		return false
	}
	l.q = append(l.q, listenDatagram{from: from, buf: bp})
	wake := l.parked
	l.parked = false
	l.mu.Unlock()
	if wake {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// deliverLocal takes an inbound packet for the fast path; it reports
// whether pkt was consumed. Called by InjectInbound when listeners exist.
func (st *Stack) deliverLocal(pkt []byte) bool {
	if len(pkt) < ipv4HeaderLen || pkt[9] != protoUDP {
		return false
	}
	dst := ipv4Dst(pkt)
	if !st.assigned(dst) {
		return false
	}
	d, err := parseUDP4(pkt)
	if err != nil {
		return false // gVisor decides (reassembly, drop and count)
	}
	ls := *st.rt.lmap.Load()
	l := ls[d.dst]
	if l == nil {
		l = ls[netip.AddrPortFrom(netip.IPv4Unspecified(), d.dst.Port())]
	}
	if l == nil {
		return false
	}
	bp := listenBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], d.payload...)
	if l.enqueue(d.src, bp) {
		st.Stats.UDPFastIn.Add(1)
	} else {
		listenBufs.Put(bp)
	}
	return true
}

// ReadFrom implements net.PacketConn: one datagram (truncated to b).
func (l *udpListener) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := l.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFromUDPAddrPort is ReadFrom without allocating the address (as
// net.UDPConn's method of that name). A closed socket or an expired
// deadline fails the read even with datagrams queued, as net.UDPConn's.
func (l *udpListener) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	for {
		select {
		case <-l.done:
			return 0, netip.AddrPort{}, net.ErrClosed
		default:
		}
		if l.rdlOn.Load() {
			select {
			case <-l.rdl.Done():
				return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
			default:
			}
		}
		if l.rpos < len(l.rbatch) {
			dg := l.rbatch[l.rpos]
			l.rbatch[l.rpos] = listenDatagram{}
			l.rpos++
			if l.rpos%rleftEvery == 0 || l.rpos == len(l.rbatch) {
				l.rleft.Store(int32(len(l.rbatch) - l.rpos))
			}
			return dg.take(b)
		}
		l.mu.Lock()
		if len(l.q) > 0 {
			l.q, l.rbatch, l.rpos = l.rbatch[:0], l.q, 0
			l.rleft.Store(int32(len(l.rbatch)))
			l.mu.Unlock()
			continue
		}
		l.rleft.Store(0)
		l.parked = true
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
		case <-l.rdl.Done():
			// A wake-up sent meanwhile stays in the channel: the next
			// wait returns at once and finds the queue.
			l.mu.Lock()
			l.parked = false
			l.mu.Unlock()
		}
	}
}

// take copies the datagram into b (truncating) and recycles its buffer.
func (dg listenDatagram) take(b []byte) (int, netip.AddrPort, error) {
	n := copy(b, *dg.buf)
	putListenBuf(dg.buf)
	return n, dg.from, nil
}

// WriteTo implements net.PacketConn through the gVisor socket.
func (l *udpListener) WriteTo(b []byte, addr net.Addr) (int, error) { return l.gc.WriteTo(b, addr) }

// Close implements net.PacketConn: the fast path stops delivering at once,
// the gVisor socket closes and the pump ends.
func (l *udpListener) Close() error {
	var err error
	l.once.Do(func() {
		l.st.rt.mu.Lock()
		if l.st.rt.listeners[l.key] == l {
			delete(l.st.rt.listeners, l.key)
			l.st.rt.publishListeners()
		}
		l.st.rt.mu.Unlock()
		close(l.done)
		err = l.gc.Close()
		<-l.pumpd
		l.mu.Lock()
		l.closed = true
		for _, dg := range l.q {
			putListenBuf(dg.buf)
		}
		l.q = nil
		l.mu.Unlock()
		l.rmu.Lock() // a reader in its wait has seen done and let go
		for _, dg := range l.rbatch[l.rpos:] {
			putListenBuf(dg.buf)
		}
		l.rbatch, l.rpos = nil, 0
		l.rmu.Unlock()
	})
	return err
}

// LocalAddr implements net.PacketConn.
func (l *udpListener) LocalAddr() net.Addr { return l.gc.LocalAddr() }

// SetDeadline implements net.PacketConn (reads only; writes never block).
func (l *udpListener) SetDeadline(t time.Time) error { return l.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (l *udpListener) SetReadDeadline(t time.Time) error {
	l.rdlOn.Store(!t.IsZero())
	l.rdl.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn.
func (l *udpListener) SetWriteDeadline(t time.Time) error { return l.gc.SetWriteDeadline(t) }
