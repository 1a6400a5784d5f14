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
	"github.com/pion/transport/v5/deadline"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ListenQueueLen bounds the datagrams a UDP listener holds unread (fast
// path and gVisor's deliveries together); beyond it datagrams are dropped
// and counted in Stats.UDPQueueFull.
const ListenQueueLen = 512

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
type udpListener struct {
	st    *Stack
	key   netip.AddrPort // as registered: unspecified address = every local address
	gc    net.PacketConn // gVisor socket (sends, and what gVisor delivers)
	ch    chan listenDatagram
	done  chan struct{}
	once  sync.Once
	pumpd chan struct{}

	rdl   *deadline.Deadline // read deadline
	rdlOn atomic.Bool        // a read deadline is set (rdl may fire)
}

// listenFast registers a listener on addr over the gVisor socket gc.
func (st *Stack) listenFast(addr netip.AddrPort, gc net.PacketConn) *udpListener {
	l := &udpListener{st: st, key: addr, gc: gc, ch: make(chan listenDatagram, ListenQueueLen),
		done: make(chan struct{}), pumpd: make(chan struct{}), rdl: deadline.New()}
	st.rt.mu.Lock()
	st.rt.listeners[addr] = l
	st.rt.nlisten.Store(int32(len(st.rt.listeners)))
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

// enqueue queues a datagram without blocking; false: queue full or closed
// (the caller keeps bp).
func (l *udpListener) enqueue(from netip.AddrPort, bp *[]byte) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.ch <- listenDatagram{from: from, buf: bp}:
		return true
	default:
		l.st.Stats.UDPQueueFull.Add(1)
		return false
	}
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
	st.rt.mu.RLock()
	l := st.rt.listeners[d.dst]
	if l == nil {
		l = st.rt.listeners[netip.AddrPortFrom(netip.IPv4Unspecified(), d.dst.Port())]
	}
	st.rt.mu.RUnlock()
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
// net.UDPConn's method of that name).
func (l *udpListener) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	// A busy reader finds a datagram queued: take it without the
	// three-way select (it locks every channel it waits on, and the
	// deadline's mutex). Only without a deadline, so that an expired one
	// still fails the read as net.UDPConn's does, and never after Close.
	if !l.rdlOn.Load() {
		select {
		case <-l.done:
			return 0, netip.AddrPort{}, net.ErrClosed
		default:
		}
		select {
		case dg := <-l.ch:
			return dg.take(b)
		default:
		}
	}
	select {
	case dg := <-l.ch:
		return dg.take(b)
	case <-l.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	case <-l.rdl.Done():
		return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
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
			l.st.rt.nlisten.Store(int32(len(l.st.rt.listeners)))
		}
		l.st.rt.mu.Unlock()
		close(l.done)
		err = l.gc.Close()
		<-l.pumpd
		for {
			select {
			case dg := <-l.ch:
				putListenBuf(dg.buf)
			default:
				return
			}
		}
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
