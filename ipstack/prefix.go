package ipstack

// The routed-prefix data plane: the stack owns a whole prefix (the site's
// 10.10.8.0/24) instead of one NIC address per endpoint.
//
//   - gVisor's NIC runs with spoofing and promiscuous mode on, so TCP can
//     be dialled from any address of the prefix (the MQTT relay's
//     per-endpoint connections) and the answers are accepted, without the
//     address being assigned: no address list for gVisor to scan per
//     packet, no churn when endpoints come and go.
//   - UDP to a routed address that is not assigned never enters gVisor:
//     InjectInbound parses it (udp4.go) and hands it, by destination, to a
//     virtual connected conn (DialUDP from a routed address, one map entry,
//     no socket) or to the handler registered for the destination port
//     (HandleUDP: one demultiplexer for the CoAP port, which finds the
//     endpoint by address itself). Nothing is served: dropped, counted,
//     ICMP port unreachable rate-limited.
//   - Datagrams from a routed address are built here and handed to Output
//     (WriteUDP), with the endpoint's address as source.
//   - Unicast to an address neither assigned nor routed is dropped and
//     counted (promiscuous mode would otherwise accept it).

import (
	"errors"
	"github.com/pion/transport/v5/deadline"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// UDPHandler receives a datagram for a routed address on a port registered
// with HandleUDP. payload is valid only during the call (copy to keep).
// It reports whether the destination was served; false counts the
// datagram as NoEndpoint and answers ICMP port unreachable (rate-limited).
// It runs on InjectInbound's goroutine and may call WriteUDP, never
// InjectInbound.
type UDPHandler func(src, dst netip.AddrPort, payload []byte) bool

// Defaults of the routed-prefix data plane.
const (
	// ConnQueueLen bounds the datagrams a virtual UDP conn holds unread.
	ConnQueueLen = 64
	// ICMPUnreachablePerSecond bounds the port unreachables sent (burst 10).
	ICMPUnreachablePerSecond = 20
)

// ErrTooBig is returned by WriteUDP (and a virtual conn's Write) for a
// datagram that does not fit the MTU unfragmented.
var ErrTooBig = errors.New("ipstack: datagram larger than the MTU")

// ErrNotRoutable is returned by AddPrefix on a stack created without
// Config.Routed.
var ErrNotRoutable = errors.New("ipstack: stack created without Config.Routed")

// ErrNotRouted is returned by WriteUDP for a source address that is
// neither assigned nor in a routed prefix.
var ErrNotRouted = errors.New("ipstack: source address not routed to this stack")

// RouteStats are the routed-prefix counters (Stats.Route).
type RouteStats struct {
	// UDPIn counts datagrams queued to a virtual conn or accepted by a
	// handler;
	// UDPOut datagrams written from a routed address.
	UDPIn, UDPOut atomic.Uint64
	// NoEndpoint counts datagrams for a routed address and port nobody
	// serves (or a handler refused); Unreachables the ICMP port
	// unreachables sent for them.
	NoEndpoint, Unreachables atomic.Uint64
	// NotRouted counts unicast packets to an address neither assigned nor
	// routed; Malformed UDP to a routed address that failed parsing
	// (lengths, checksums); Fragments fragmented UDP to a routed address
	// (not reassembled: CoAP on this path fits the MTU); ConnQueueFull
	// datagrams dropped because a virtual conn's queue was full.
	NotRouted, Malformed, Fragments, ConnQueueFull atomic.Uint64
}

// routing is the stack's routed-prefix state.
type routing struct {
	prefixes atomic.Pointer[[]netip.Prefix]
	// assigned mirrors Stack.addrs for the packet path (copy on write).
	assigned atomic.Pointer[map[netip.Addr]struct{}]

	mu       sync.RWMutex
	handlers map[uint16]UDPHandler       // guarded by mu
	conns    map[netip.AddrPort]*udpConn // guarded by mu: virtual conns by local address
	// listeners are ListenUDP's sockets by bound address (listen.go).
	listeners map[netip.AddrPort]*udpListener // guarded by mu
	nlisten   atomic.Int32                    // len(listeners), for the packet path
	// lmap mirrors listeners for the packet path (copy on write): no
	// lock per datagram.
	lmap atomic.Pointer[map[netip.AddrPort]*udpListener]

	ipID    atomic.Uint32
	icmp    *rate.Limiter
	warn    *rate.Limiter // log lines for dropped input
	bufs    sync.Pool
	routed  atomic.Bool
	allowed bool // Config.Routed
}

func (r *routing) init() {
	r.handlers = map[uint16]UDPHandler{}
	r.conns = map[netip.AddrPort]*udpConn{}
	r.listeners = map[netip.AddrPort]*udpListener{}
	r.lmap.Store(&map[netip.AddrPort]*udpListener{})
	r.icmp = rate.NewLimiter(ICMPUnreachablePerSecond, 10)
	r.warn = rate.NewLimiter(1, 5)
	r.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	empty := map[netip.Addr]struct{}{}
	r.assigned.Store(&empty)
	r.prefixes.Store(&[]netip.Prefix{})
}

// AddPrefix routes a whole prefix to the stack: packets to any of its
// addresses are accepted, and traffic can leave from any of them (see the
// file comment). Addresses need not be added one by one. Adding a prefix
// twice is not an error.
func (st *Stack) AddPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() {
		return ErrBadAddress
	}
	if !st.rt.allowed {
		return ErrNotRoutable
	}
	p = p.Masked()
	st.mu.Lock()
	defer st.mu.Unlock()
	old := *st.rt.prefixes.Load()
	for _, q := range old {
		if q == p {
			return nil
		}
	}
	if !st.rt.routed.Load() {
		if err := st.s.SetSpoofing(nicID, true); err != nil {
			return errors.New("ipstack: spoofing: " + err.String())
		}
		if err := st.s.SetPromiscuousMode(nicID, true); err != nil {
			return errors.New("ipstack: promiscuous mode: " + err.String())
		}
		st.rt.routed.Store(true)
	}
	nw := append(append([]netip.Prefix(nil), old...), p)
	st.rt.prefixes.Store(&nw)
	st.log.Info("prefix routed", "prefix", p.String())
	return nil
}

// Routed reports whether a is in a prefix added with AddPrefix.
func (st *Stack) Routed(a netip.Addr) bool {
	for _, p := range *st.rt.prefixes.Load() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (st *Stack) assigned(a netip.Addr) bool {
	_, ok := (*st.rt.assigned.Load())[a]
	return ok
}

// syncAssigned republishes the assigned set; st.mu held.
func (st *Stack) syncAssigned() {
	m := make(map[netip.Addr]struct{}, len(st.addrs))
	for a := range st.addrs {
		m[a] = struct{}{}
	}
	st.rt.assigned.Store(&m)
}

// HandleUDP registers h for datagrams to port on every routed address that
// has no virtual conn on that port; nil unregisters.
func (st *Stack) HandleUDP(port uint16, h UDPHandler) {
	st.rt.mu.Lock()
	defer st.rt.mu.Unlock()
	if h == nil {
		delete(st.rt.handlers, port)
		return
	}
	st.rt.handlers[port] = h
}

// routeInbound takes the packets of the routed-prefix data plane out of
// the inbound path; it reports whether pkt was consumed (delivered or
// dropped). Everything else goes to gVisor.
func (st *Stack) routeInbound(pkt []byte) bool {
	dst := ipv4Dst(pkt)
	if st.assigned(dst) {
		return false
	}
	if !st.Routed(dst) {
		if dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
		st.Stats.Route.NotRouted.Add(1)
		return true
	}
	d, err := parseUDP4(pkt)
	return st.routeUDP(pkt, dst, d, err)
}

// routeUDP finishes routeInbound for either family once pkt (to the
// routed address dst) was parsed into d (or err).
func (st *Stack) routeUDP(pkt []byte, dst netip.Addr, d udp4, err error) bool {
	switch {
	case err == nil:
	case errors.Is(err, errNotUDP):
		return false // TCP (spoofed dials) and ICMP: gVisor
	case errors.Is(err, errFragment):
		st.Stats.Route.Fragments.Add(1)
		return true
	default:
		st.Stats.Route.Malformed.Add(1)
		if st.rt.warn.Allow() {
			st.log.Warn("malformed UDP to a routed address dropped", "dst", dst.String(), "err", err.Error())
		}
		return true
	}
	st.rt.mu.RLock()
	c := st.rt.conns[d.dst]
	h := st.rt.handlers[d.dst.Port()]
	st.rt.mu.RUnlock()
	switch {
	case c != nil && c.remote == d.src:
		if c.deliver(d.payload) {
			st.Stats.Route.UDPIn.Add(1)
		}
		return true
	case c == nil && h != nil && h(d.src, d.dst, d.payload):
		st.Stats.Route.UDPIn.Add(1)
		return true
	}
	st.Stats.Route.NoEndpoint.Add(1)
	if st.rt.warn.Allow() {
		st.log.Info("datagram for a routed address nobody serves dropped", "src", d.src.String(), "dst", d.dst.String())
	}
	if st.rt.icmp.Allow() {
		bp := st.rt.bufs.Get().(*[]byte)
		var b []byte
		if dst.Is6() {
			b = appendPortUnreachable6((*bp)[:0], pkt)
		} else {
			b = appendPortUnreachable((*bp)[:0], pkt, uint16(st.rt.ipID.Add(1)))
		}
		if st.emit(b) {
			st.Stats.Route.Unreachables.Add(1)
		}
		*bp = b
		st.rt.bufs.Put(bp)
	}
	return true
}

// emit hands a packet built here to Output with the NIC's accounting.
func (st *Stack) emit(b []byte) bool {
	if st.closed.Load() {
		return false
	}
	if err := st.ep.output(b); err != nil {
		st.Stats.OutputErrors.Add(1)
		return false
	}
	st.Stats.PacketsOut.Add(1)
	st.Stats.BytesOut.Add(uint64(len(b)))
	return true
}

// WriteUDP sends one datagram from src (an assigned or routed address) to
// dst without a socket.
func (st *Stack) WriteUDP(src, dst netip.AddrPort, payload []byte) error {
	if st.closed.Load() {
		return ErrClosed
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	v6 := src.Addr().Is6()
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || v6 != dst.Addr().Is6() {
		return ErrBadAddress
	}
	if !st.Routed(src.Addr()) && !st.assigned(src.Addr()) {
		return ErrNotRouted
	}
	hl := ipv4HeaderLen
	if v6 {
		hl = ipv6HeaderLen
	}
	if hl+udpHeaderLen+len(payload) > st.MTU() {
		return ErrTooBig
	}
	bp := st.rt.bufs.Get().(*[]byte)
	var b []byte
	if v6 {
		b = appendUDP6((*bp)[:0], src, dst, payload)
	} else {
		b = appendUDP4((*bp)[:0], src, dst, uint16(st.rt.ipID.Add(1)), payload)
	}
	ok := st.emit(b)
	*bp = b
	st.rt.bufs.Put(bp)
	if !ok {
		return errors.New("ipstack: output failed")
	}
	st.Stats.Route.UDPOut.Add(1)
	return nil
}

// dialRouted returns a virtual connected UDP conn from a routed address:
// a map entry the inbound path delivers to, writes through WriteUDP.
func (st *Stack) dialRouted(src, dst netip.AddrPort) (net.Conn, error) {
	st.rt.mu.Lock()
	defer st.rt.mu.Unlock()
	if src.Port() == 0 {
		for i := 0; ; i++ {
			if i == 64 {
				return nil, errors.New("ipstack: no free ephemeral port on " + src.Addr().String())
			}
			cand := netip.AddrPortFrom(src.Addr(), uint16(49152+rand.IntN(16384)))
			if st.rt.conns[cand] == nil {
				src = cand
				break
			}
		}
	} else if st.rt.conns[src] != nil {
		return nil, errors.New("ipstack: address in use: " + src.String())
	}
	c := &udpConn{st: st, local: src, remote: dst, ch: make(chan []byte, ConnQueueLen), done: make(chan struct{}), rdl: deadline.New()}
	st.rt.conns[src] = c
	return c, nil
}

// closeRouted closes the virtual conns whose local address is a.
func (st *Stack) closeRouted(a netip.Addr) {
	st.rt.mu.RLock()
	var cs []*udpConn
	for k, c := range st.rt.conns {
		if k.Addr() == a {
			cs = append(cs, c)
		}
	}
	st.rt.mu.RUnlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// RoutedConns returns how many virtual UDP conns are open.
func (st *Stack) RoutedConns() int {
	st.rt.mu.RLock()
	defer st.rt.mu.RUnlock()
	return len(st.rt.conns)
}

// udpConn is a virtual connected UDP conn of a routed address.
type udpConn struct {
	st            *Stack
	local, remote netip.AddrPort
	ch            chan []byte
	done          chan struct{}
	once          sync.Once

	rdl *deadline.Deadline // read deadline
}

func (c *udpConn) deliver(p []byte) bool {
	select {
	case c.ch <- append([]byte(nil), p...):
		return true
	default:
		c.st.Stats.Route.ConnQueueFull.Add(1)
		return false
	}
}

// Read implements net.Conn: one datagram (truncated to b).
func (c *udpConn) Read(b []byte) (int, error) {
	select {
	case p := <-c.ch:
		return copy(b, p), nil
	case <-c.done:
		return 0, net.ErrClosed
	case <-c.rdl.Done():
		return 0, os.ErrDeadlineExceeded
	}
}

// Write implements net.Conn.
func (c *udpConn) Write(b []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if err := c.st.WriteUDP(c.local, c.remote, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close implements net.Conn; its map entry goes at once.
func (c *udpConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.st.rt.mu.Lock()
		if c.st.rt.conns[c.local] == c {
			delete(c.st.rt.conns, c.local)
		}
		c.st.rt.mu.Unlock()
	})
	return nil
}

func (c *udpConn) LocalAddr() net.Addr  { return net.UDPAddrFromAddrPort(c.local) }
func (c *udpConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.remote) }

func (c *udpConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *udpConn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

func (c *udpConn) SetWriteDeadline(time.Time) error { return nil }
