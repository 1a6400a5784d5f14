package coap

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pion/transport/v5/deadline"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// The guard is the UDP listener under pion: it owns the socket, applies a
// cheap sanity check to every datagram before pion sees it, counts and
// logs (rate-limited) what fails, and routes the rest to per-peer conns by
// Connection ID (RFC 9146) or remote address, as pion's own listener does.
//
// New peers are cheap until they prove their address: a ClientHello
// without a valid cookie is answered with a stateless HelloVerifyRequest
// (cookie.go) and forgotten; only a ClientHello echoing a valid cookie gets
// a conn and a pion server (which then skips its own cookie exchange).
// Those handshakes are pending until the endpoint is authenticated; they
// are capped per source IP and in total and closed after PendingTimeout.
//
// What it covers: datagrams that are not a sequence of well-formed DTLS
// 1.0/1.2 record headers (unknown content type, wrong version, a length
// running past the datagram or over the RFC 6347 maximum, trailing bytes),
// and well-formed records from a peer with no session that do not start a
// handshake. What it cannot see: records that pass this check but fail
// pion's own processing (bad MAC or AEAD tag, replayed sequence numbers,
// malformed handshake bodies); those are dropped inside pion uncounted, or
// show up as HandshakeFailures.

const (
	recordHeaderLen = 13
	maxRecordLen    = 1<<14 + 2048 // RFC 6347 section 4.1 / RFC 5246 section 6.2.3
	ctCID           = 25           // tls12_cid, RFC 9146
	guardBacklog    = 128
	guardQueue      = 32
	guardMTU        = 8192
	guardBatch      = 16 // datagrams per recvmmsg (16 × 8 KB buffers)
)

// guardLimits bound the handshakes of peers that proved their address.
type guardLimits struct {
	maxPending, maxPendingPerSource int
	pendingTimeout                  time.Duration
	// budget is the CPU (cores) handshakes may use (admission.go); ≤ 0
	// admits up to the caps.
	budget float64
}

// guardListener is a pion dtlsnet.PacketListener over one UDP socket.
type guardListener struct {
	pc      *net.UDPConn
	s       *Server
	cidLen  int
	lim     guardLimits
	cookies *cookieJar
	adm     *admitter // guarded by mu
	accept  chan *guardConn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu        sync.Mutex
	conns     map[string]*guardConn // guarded by mu: by remote address and by "cid:"+CID
	pending   int                   // guarded by mu: conns not yet authenticated
	pendingBy map[netip.Addr]int    // guarded by mu: pending per source IP
	// parked holds idle sessions without a conn (park.go), by remote
	// address and by "cid:"+CID, like conns; the next record wakes one.
	parked map[string]*parkedSession // guarded by mu
}

func newGuardListener(pc *net.UDPConn, s *Server, cidLen int, lim guardLimits, cookies *cookieJar) *guardListener {
	l := &guardListener{pc: pc, s: s, cidLen: cidLen, lim: lim, cookies: cookies, adm: newAdmitter(lim.budget, 4*runtime.GOMAXPROCS(0), time.Now, processCPU), accept: make(chan *guardConn, guardBacklog),
		done: make(chan struct{}), conns: map[string]*guardConn{}, pendingBy: map[netip.Addr]int{}, parked: map[string]*parkedSession{}}
	l.wg.Add(1)
	go l.readLoop()
	return l
}

func (l *guardListener) Accept() (net.PacketConn, net.Addr, error) {
	select {
	case c := <-l.accept:
		return c, c.raddr, nil
	case <-l.done:
		return nil, nil, net.ErrClosed
	}
}

// Close stops accepting and closes the socket; conns still open see their
// reads fail.
func (l *guardListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.pc.Close()
		l.wg.Wait()
		l.mu.Lock()
		cs := make([]*guardConn, 0, len(l.conns))
		for _, c := range l.conns {
			cs = append(cs, c)
		}
		l.mu.Unlock()
		for _, c := range cs {
			_ = c.Close()
		}
	})
	return err
}

func (l *guardListener) Addr() net.Addr { return l.pc.LocalAddr() }

// batchReader is x/net's ipv4 or ipv6 PacketConn: recvmmsg on Linux.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// readLoop reads up to guardBatch datagrams per system call (recvmmsg via
// x/net: in a storm or under relay load the socket holds many; a quiet
// socket returns one at a time as before) and hands each to handle.
func (l *guardListener) readLoop() {
	defer l.wg.Done()
	var br batchReader = ipv4.NewPacketConn(l.pc)
	if a, ok := l.pc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		br = ipv6.NewPacketConn(l.pc)
	}
	ms := make([]ipv4.Message, guardBatch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, guardMTU)}
	}
	for {
		n, err := br.ReadBatch(ms, 0)
		if err != nil {
			return
		}
		for i := range ms[:n] {
			if ms[i].Addr != nil {
				l.handle(ms[i].Buffers[0][:ms[i].N], ms[i].Addr)
			}
		}
	}
}

// handle routes one datagram (the buffer is reused after it returns).
func (l *guardListener) handle(b []byte, raddr net.Addr) {
	n := len(b)
	if r := ClassifyDatagram(b, l.cidLen); r != GarbageOK {
		l.s.garbage(r, raddr, n)
		return
	}
	c, reply, stale, wake := l.route(raddr, b)
	if stale != nil {
		_ = stale.Close()
	}
	if reply != nil {
		if _, err := l.pc.WriteTo(reply, raddr); err == nil {
			l.s.Stats.HelloVerifySent.Add(1)
		}
	}
	if c == nil {
		return
	}
	select {
	case c.in <- packet{b: append([]byte(nil), b...), from: raddr}:
	default: // the conn is not reading: drop like a full socket buffer
	}
	if wake != nil {
		// A parked session's record: pion resumes the session from its
		// exported state and reads the record from c.
		go l.s.resume(wake, c)
	}
}

// route finds the conn for a datagram, creating one for a new peer's
// ClientHello with a valid cookie. Without a conn it may return a
// HelloVerifyRequest to send back; nil, nil means drop (counted).
//
// A record for a parked session (by CID, or by address for a session
// without one) gets a new conn, returned with the session to resume.
func (l *guardListener) route(raddr net.Addr, b []byte) (c *guardConn, reply []byte, stale *guardConn, wake *parkedSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cidLen > 0 {
		if cid, ok := recordCID(b, l.cidLen); ok {
			if c := l.conns["cid:"+cid]; c != nil {
				return l.holdIfParking(c, raddr, b), nil, nil, nil
			}
			if p := l.parked["cid:"+cid]; p != nil {
				c := l.unparkLocked(p, raddr)
				return c, nil, nil, p
			}
		}
	}
	old := l.conns[raddr.String()]
	if old != nil && !startsHandshake(b) {
		return l.holdIfParking(old, raddr, b), nil, nil, nil
	}
	if old == nil && !startsHandshake(b) {
		if p := l.parked[raddr.String()]; p != nil {
			c := l.unparkLocked(p, raddr)
			return c, nil, nil, p
		}
		l.s.garbage(GarbageNoSession, raddr, len(b))
		return nil, nil, nil, nil
	}
	ch, err := ParseClientHello(b)
	switch {
	case old != nil && (err != nil || bytes.Equal(old.random, ch.Random)):
		// The conn's own handshake: its next flight (epoch 0) or its
		// ClientHello again (retransmission).
		return old, nil, nil, nil
	case err != nil:
		l.s.garbage(GarbageHello, raddr, len(b))
		return nil, nil, nil, nil
	}
	from := addrPort(raddr)
	if !l.cookies.valid(from, &ch) {
		if len(ch.Cookie) > 0 {
			l.s.Stats.CookieInvalid.Add(1)
		}
		hvr, err := helloVerifyRequest(&ch, l.cookies.make(from, &ch))
		if err != nil {
			return nil, nil, stale, nil
		}
		return nil, hvr, nil, nil
	}
	// The peer proved it receives at this address.
	select {
	case <-l.done:
		return nil, nil, stale, nil
	default:
	}
	if old != nil {
		// A new handshake from the address of a pending or established
		// conn (the device rebooted, often with a fixed source port, or
		// gave up on a handshake): the cookie proved the address, the new
		// handshake replaces the old conn. Epoch-0 ClientHellos are never
		// part of a running session (renegotiation would be encrypted).
		l.forgetLocked(old)
		stale = old
	}
	src := from.Addr()
	if l.pending >= l.lim.maxPending {
		l.s.Stats.PendingRefused.Add(1)
		l.s.warnf("dtls handshake refused: too many pending", "peer", raddr.String(), "pending", l.pending)
		return nil, nil, stale, nil
	}
	if l.pendingBy[src] >= l.lim.maxPendingPerSource {
		l.s.Stats.PendingRefusedSource.Add(1)
		l.s.warnf("dtls handshake refused: too many pending from this source", "peer", raddr.String(), "pending", l.pendingBy[src])
		return nil, nil, stale, nil
	}
	if !l.adm.admit(l.pending) {
		// Over the CPU budget: drop the hello; the device retransmits it
		// on its flight timer (admission.go).
		l.s.Stats.BudgetDeferred.Add(1)
		l.s.warnf("dtls handshake deferred: over the CPU budget", "peer", raddr.String(), "rate", int(l.adm.Rate()))
		return nil, nil, stale, nil
	}
	c = &guardConn{l: l, raddr: raddr, src: src, random: append([]byte(nil), ch.Random...), seqBase: ch.RecordSeq, pending: true, order: l.s.connSeq.Add(1),
		in: make(chan packet, guardQueue), done: make(chan struct{}), rdl: deadline.New(), wdl: deadline.New()}
	select {
	case l.accept <- c:
		l.conns[raddr.String()] = c
		l.pending++
		l.pendingBy[src]++
		c.timer = time.AfterFunc(l.lim.pendingTimeout, c.expire)
		return c, nil, stale, nil
	default:
		l.s.Stats.Backlog.Add(1)
		return nil, nil, stale, nil
	}
}

// forgetLocked removes c from the routing maps and the pending counts.
func (l *guardListener) forgetLocked(c *guardConn) {
	if c.cid != "" && l.conns["cid:"+c.cid] == c {
		delete(l.conns, "cid:"+c.cid)
	}
	if l.conns[c.raddr.String()] == c {
		delete(l.conns, c.raddr.String())
	}
	l.unpendLocked(c)
}

func (l *guardListener) unpendLocked(c *guardConn) {
	if !c.pending {
		return
	}
	c.pending = false
	l.adm.done()
	l.pending--
	if l.pendingBy[c.src]--; l.pendingBy[c.src] <= 0 {
		delete(l.pendingBy, c.src)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}

// established marks the conn of a peer whose endpoint was authenticated:
// no longer pending, no pending timeout.
func (l *guardListener) established(raddr net.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.conns[raddr.String()]; c != nil {
		l.unpendLocked(c)
	}
}

// Pending returns the handshakes in progress (after a valid cookie).
func (l *guardListener) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

type packet struct {
	b    []byte
	from net.Addr
}

// guardConn is one peer's net.PacketConn for pion.
type guardConn struct {
	l      *guardListener
	raddr  net.Addr
	src    netip.Addr
	random []byte // the ClientHello's random (spots retransmissions)
	// seqBase is added to the record sequence numbers of pion's epoch-0
	// records: the peer already got our HelloVerifyRequest with its
	// ClientHello's number (RFC 6347 section 4.2.1), and clients drop a
	// ServerHello numbered at or below it as a replay (libcoap's OpenSSL
	// and GnuTLS clients did, retransmitting a second later).
	seqBase uint64
	// order numbers the server's conns as they started (a cookie
	// ClientHello, or a parked session woken): of two sessions of one
	// endpoint, the later one wins (Session.seq).
	order uint64
	timer *time.Timer // pending timeout; set under l.mu
	in    chan packet
	done  chan struct{}
	once  sync.Once
	rdl   *deadline.Deadline
	wdl   *deadline.Deadline

	pending    bool   // guarded by l.mu
	cid        string // guarded by l.mu
	helloSeen  bool   // guarded by l.mu: our ServerHello was parsed for its CID
	raddrFreed bool   // guarded by l.mu
	// parking is set (under l.mu) before the session's state is exported:
	// from then on nothing pion writes reaches the wire (the exported
	// sequence numbers stay unused) and records that arrive are held for
	// the session's next conn instead of reaching this one.
	parking bool     // guarded by l.mu
	held    []packet // guarded by l.mu; at most maxHeld
}

// expire closes a handshake still pending after the pending timeout.
func (c *guardConn) expire() {
	c.l.mu.Lock()
	p := c.pending
	c.l.mu.Unlock()
	if p {
		c.l.s.Stats.PendingExpired.Add(1)
		c.l.s.warnf("dtls handshake timed out", "peer", c.raddr.String())
		_ = c.Close()
	}
}

func (c *guardConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	case <-c.rdl.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (c *guardConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	l := c.l
	l.mu.Lock()
	if c.cid == "" && !c.helloSeen && l.cidLen > 0 && startsHandshake(b) { // ServerHello: handshake, epoch 0
		cid, ok, hello := serverHelloCID(b)
		if ok {
			c.cid = cid
			l.conns["cid:"+cid] = c
		}
		// Parse one ServerHello only: the flights after it (and its
		// retransmissions) have nothing to add.
		c.helloSeen = hello
	}
	// Once the peer moved (NAT rebinding, routed by CID), free the old
	// address for another peer, as pion's listener does.
	if c.cid != "" && !c.raddrFreed && addr.String() != c.raddr.String() {
		if l.conns[c.raddr.String()] == c {
			delete(l.conns, c.raddr.String())
		}
		c.raddrFreed = true
	}
	parking := c.parking
	l.mu.Unlock()
	if parking {
		return len(b), nil // the session is being parked: pion's records never leave (close_notify included)
	}
	if c.seqBase > 0 && hasEpoch0(b) {
		b = shiftEpoch0(append([]byte(nil), b...), c.seqBase)
	}
	select {
	case <-c.wdl.Done():
		return 0, context.DeadlineExceeded
	case <-c.done: // replaced by a new handshake from its address: say nothing more there
		return 0, net.ErrClosed
	default:
	}
	return c.l.pc.WriteTo(b, addr)
}

func (c *guardConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.l.mu.Lock()
		c.l.forgetLocked(c)
		c.l.mu.Unlock()
	})
	return nil
}

func (c *guardConn) LocalAddr() net.Addr { return c.l.pc.LocalAddr() }

func (c *guardConn) SetDeadline(t time.Time) error {
	c.wdl.Set(t)
	return c.SetReadDeadline(t)
}

func (c *guardConn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

func (c *guardConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Set(t)
	return nil
}
