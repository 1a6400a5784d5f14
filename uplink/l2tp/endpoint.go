package l2tp

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint owns a PacketConn and the tunnels running over it. It runs one
// reader goroutine, which demultiplexes datagrams by tunnel ID and checks
// that they come from the transport address owning the tunnel, and one
// owner goroutine per tunnel. Data messages are handed to session frame
// handlers straight from the reader, bypassing the owner goroutines.
type Endpoint struct {
	conn  PacketConn
	cfg   Config
	log   *slog.Logger
	stats *Stats

	mu       sync.RWMutex
	tunnels  map[uint16]*Tunnel // by our tunnel ID
	byPeer   map[string]*Tunnel // by transport address + peer tunnel ID (SCCRQ dedupe)
	halfOpen map[string]int     // not yet established tunnels per transport address
	closed   bool

	accept    chan *Session
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	warn      rateLimitedLog
}

// PacketConn is the datagram transport L2TP runs over (net.PacketConn).
type PacketConn = net.PacketConn

// NewEndpoint starts an endpoint with cfg.Role over conn and takes
// ownership of conn: Close closes it.
func NewEndpoint(conn PacketConn, cfg Config) *Endpoint {
	cfg.setDefaults()
	e := &Endpoint{
		conn: conn, cfg: cfg, log: cfg.Logger, stats: cfg.Stats,
		tunnels: map[uint16]*Tunnel{}, byPeer: map[string]*Tunnel{}, halfOpen: map[string]int{},
		accept: make(chan *Session, cfg.AcceptQueue), done: make(chan struct{}),
	}
	e.wg.Add(1)
	go e.readLoop()
	return e
}

// Listen starts an LNS endpoint on conn; established sessions are
// returned by Accept.
func Listen(conn PacketConn, cfg Config) (*Endpoint, error) {
	cfg.Role = LNS
	return NewEndpoint(conn, cfg), nil
}

// Dial starts a LAC endpoint on conn, establishes one tunnel to peer and
// returns it. Closing the tunnel closes the endpoint and conn.
func Dial(ctx context.Context, conn PacketConn, peer net.Addr, cfg Config) (*Tunnel, error) {
	cfg.Role = LAC
	e := NewEndpoint(conn, cfg)
	t, err := e.Dial(ctx, peer)
	if err != nil {
		e.Close()
		return nil, err
	}
	t.ownsEndpoint = true
	return t, nil
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() *Stats { return e.stats }

// Accept returns the next established incoming session (LNS).
func (e *Endpoint) Accept(ctx context.Context) (*Session, error) {
	select {
	case s := <-e.accept:
		return s, nil
	case <-e.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close tears down every tunnel with StopCCN (not waiting for the acks),
// stops the goroutines and closes the transport.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		ts := make([]*Tunnel, 0, len(e.tunnels))
		for _, t := range e.tunnels {
			ts = append(ts, t)
		}
		e.mu.Unlock()
		for _, t := range ts {
			t.abort()
		}
		close(e.done)
		e.conn.Close()
	})
	e.wg.Wait()
	return nil
}

// Dial establishes a new tunnel (LAC) to peer over this endpoint.
func (e *Endpoint) Dial(ctx context.Context, peer net.Addr) (*Tunnel, error) {
	if e.cfg.Role != LAC {
		return nil, ErrFSM
	}
	t, err := e.newTunnel(peer)
	if err != nil {
		return nil, err
	}
	t.do(func(c *core) { c.Start(e.cfg.Clock.Now()) })
	select {
	case <-t.established:
		return t, nil
	case <-t.done:
		return nil, t.err
	case <-ctx.Done():
		t.abort()
		return nil, ctx.Err()
	}
}

func (e *Endpoint) allocTunnelID() (uint16, error) {
	var b [2]byte
	for range 64 {
		if _, err := io.ReadFull(e.cfg.Rand, b[:]); err != nil {
			return 0, err
		}
		id := binary.BigEndian.Uint16(b[:])
		if id != 0 && e.tunnels[id] == nil {
			return id, nil
		}
	}
	return 0, ErrTooMany
}

// newTunnel registers a tunnel and starts its owner goroutine.
func (e *Endpoint) newTunnel(peer net.Addr) (*Tunnel, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if len(e.tunnels) >= e.cfg.MaxTunnels {
		return nil, ErrTooMany
	}
	id, err := e.allocTunnelID()
	if err != nil {
		return nil, err
	}
	t := &Tunnel{
		e: e, peerKey: peer.Network() + "|" + peer.String(), halfOpen: true,
		in: make(chan []byte, 64), cmds: make(chan func(*core), 16),
		established: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{}),
	}
	t.peer.Store(&peer)
	t.c = newCore(&e.cfg, e.cfg.Role, id, t.sendControl, coreEvents{
		established:    t.onEstablished,
		closed:         t.onClosed,
		sessionUp:      t.onSessionUp,
		sessionRequest: nil,
	}, e.cfg.Clock.Now())
	t.c.tunnel = t
	t.c.log = t.c.log.With("peer", peer.String())
	e.tunnels[id] = t
	e.halfOpen[t.peerKey]++
	e.wg.Add(1)
	go t.run()
	return t, nil
}

// removeTunnel forgets t.
func (e *Endpoint) removeTunnel(t *Tunnel) {
	e.mu.Lock()
	if e.tunnels[t.c.localID] == t {
		delete(e.tunnels, t.c.localID)
	}
	if t.byPeerKey != "" && e.byPeer[t.byPeerKey] == t {
		delete(e.byPeer, t.byPeerKey)
	}
	e.leaveHalfOpen(t)
	e.mu.Unlock()
}

// leaveHalfOpen must be called with e.mu held.
func (e *Endpoint) leaveHalfOpen(t *Tunnel) {
	if t.halfOpen {
		t.halfOpen = false
		if e.halfOpen[t.peerKey]--; e.halfOpen[t.peerKey] <= 0 {
			delete(e.halfOpen, t.peerKey)
		}
	}
}

// sameAddr compares transport addresses without allocating for the common
// types; other types compare by Network and String.
func sameAddr(a, b net.Addr) bool {
	if a == nil || b == nil {
		return false
	}
	switch x := a.(type) {
	case *net.UDPAddr:
		if y, ok := b.(*net.UDPAddr); ok {
			return x.Port == y.Port && x.IP.Equal(y.IP) && x.Zone == y.Zone
		}
		return false
	}
	if a == b {
		return true
	}
	return a.Network() == b.Network() && a.String() == b.String()
}

func (e *Endpoint) readLoop() {
	defer e.wg.Done()
	buf := make([]byte, MaxDatagram)
	for {
		n, addr, err := e.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-e.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		e.Input(buf[:n], addr)
	}
}

// Input dispatches one datagram received from addr, as the reader
// goroutine does for datagrams read from the PacketConn; a transport that
// pushes datagrams (the ESP layer) may call it directly. Data goes
// straight to the session's frame handler without allocating; control is
// copied to the tunnel's owner goroutine. b is not retained.
func (e *Endpoint) Input(b []byte, addr net.Addr) {
	h, err := ParseHeader(b)
	if err != nil {
		e.stats.MalformedDropped.Add(1)
		e.warn.warn(e.log, e.cfg.Clock.Now(), "malformed L2TP datagram dropped", "peer", addr.String(), "err", err)
		return
	}
	if h.TunnelID == 0 {
		if h.Control && e.cfg.Role == LNS {
			e.inputSCCRQ(b, addr)
			return
		}
		e.stats.UnknownTunnel.Add(1)
		return
	}
	e.mu.RLock()
	t := e.tunnels[h.TunnelID]
	e.mu.RUnlock()
	if t == nil {
		e.stats.UnknownTunnel.Add(1)
		return
	}
	if !sameAddr(t.peerAddr(), addr) {
		// A LAC accepts the SCCRP from another port of the peer (§8.1).
		if !(h.Control && e.cfg.Role == LAC && !t.isEstablished()) {
			e.stats.WrongPeer.Add(1)
			return
		}
		t.setPeer(addr)
	}
	if !h.Control {
		end := len(b)
		if h.HasLength {
			end = int(h.Length)
		}
		s := t.c.lookupSession(h.SessionID)
		if s == nil {
			e.stats.UnknownSession.Add(1)
			return
		}
		if h.HasSeq && !s.seq.Load() {
			// The peer sequences its data: do the same (RFC 2661 §5.4).
			s.seq.Store(true)
		}
		s.deliverFrame(b[h.PayloadOffset:end])
		return
	}
	t.post(append([]byte(nil), b...))
}

// inputSCCRQ handles a control message to tunnel 0: a new (or
// retransmitted) SCCRQ, bounded by the half-open and tunnel caps.
func (e *Endpoint) inputSCCRQ(b []byte, addr net.Addr) {
	_, m, err := ParseControl(b, e.cfg.Secret)
	if err != nil || m.Type != MsgSCCRQ {
		e.stats.MalformedDropped.Add(1)
		return
	}
	ptid, ok := m.Uint16(AVPAssignedTunnelID)
	if !ok || ptid == 0 {
		e.stats.MalformedDropped.Add(1)
		return
	}
	key := peerTunnelKey(addr, ptid)
	e.mu.RLock()
	t := e.byPeer[key]
	refuse := e.halfOpen[addr.Network()+"|"+addr.String()] >= e.cfg.MaxHalfOpenPerPeer || len(e.tunnels) >= e.cfg.MaxTunnels
	e.mu.RUnlock()
	if t != nil {
		t.post(append([]byte(nil), b...))
		return
	}
	if refuse {
		e.stats.SCCRQRefused.Add(1)
		e.warn.warn(e.log, e.cfg.Clock.Now(), "SCCRQ refused: too many half-open tunnels", "peer", addr.String())
		return
	}
	if f := e.cfg.AdmitTunnel; f != nil && !f(addr) {
		e.stats.SCCRQRefused.Add(1)
		e.warn.warn(e.log, e.cfg.Clock.Now(), "SCCRQ refused by policy: too many tunnels for this peer", "peer", addr.String())
		return
	}
	t, err = e.newTunnel(addr)
	if err != nil {
		e.stats.SCCRQRefused.Add(1)
		return
	}
	e.mu.Lock()
	t.byPeerKey = key
	e.byPeer[key] = t
	e.mu.Unlock()
	if f := e.cfg.OnTunnel; f != nil {
		f(t)
	}
	t.post(append([]byte(nil), b...))
}

// Tunnel is one control connection and its sessions.
type Tunnel struct {
	e            *Endpoint
	c            *core // owned by run
	ownsEndpoint bool

	// peer is read for every data frame sent and received (by different
	// goroutines) and written only when a LAC follows the SCCRP's port:
	// an atomic pointer, not a mutex both directions contend on.
	peer      atomic.Pointer[net.Addr]
	peerKey   string // network|address at creation
	byPeerKey string // set once under e.mu
	halfOpen  bool   // guarded by e.mu

	in   chan []byte
	cmds chan func(*core)
	stop chan struct{} // asks run to abort

	estOnce     sync.Once
	established chan struct{}
	doneOnce    sync.Once
	done        chan struct{}
	err         error
	stopOnce    sync.Once
}

func (t *Tunnel) peerAddr() net.Addr { return *t.peer.Load() }

func (t *Tunnel) setPeer(a net.Addr) {
	t.peer.Store(&a)
}

func (t *Tunnel) isEstablished() bool {
	select {
	case <-t.established:
		return true
	default:
		return false
	}
}

// LocalID returns our tunnel ID.
func (t *Tunnel) LocalID() uint16 { return t.c.localID }

// PeerNames returns the peer's Host-Name and Vendor-Name AVPs (empty
// until its SCCRQ/SCCRP arrived, or when it sent none).
func (t *Tunnel) PeerNames() (host, vendor string) {
	if n := t.c.peerNames.Load(); n != nil {
		return n[0], n[1]
	}
	return "", ""
}

// PeerAddr returns the transport address of the peer.
func (t *Tunnel) PeerAddr() net.Addr { return t.peerAddr() }

// Done is closed when the tunnel has ended; Err then says why.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Err returns the close reason once Done is closed.
func (t *Tunnel) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

func (t *Tunnel) post(b []byte) {
	select {
	case t.in <- b:
	default:
		t.e.stats.InboxOverflow.Add(1)
	}
}

// do runs fn on the owner goroutine and waits for it; false if the
// tunnel ended first.
func (t *Tunnel) do(fn func(*core)) bool {
	ran := make(chan struct{})
	select {
	case t.cmds <- func(c *core) { fn(c); close(ran) }:
	case <-t.done:
		return false
	}
	select {
	case <-ran:
		return true
	case <-t.done:
		return false
	}
}

func (t *Tunnel) abort() {
	t.stopOnce.Do(func() { close(t.stop) })
}

func (t *Tunnel) sendControl(b []byte) error {
	_, err := t.e.conn.WriteTo(b, t.peerAddr())
	return err
}

func (t *Tunnel) onEstablished() {
	t.e.mu.Lock()
	t.e.leaveHalfOpen(t)
	t.e.mu.Unlock()
	t.estOnce.Do(func() { close(t.established) })
}

func (t *Tunnel) onClosed(err error) {
	t.doneOnce.Do(func() {
		t.err = err
		close(t.done)
	})
}

func (t *Tunnel) onSessionUp(s *Session) {
	if t.e.cfg.Role != LNS {
		return
	}
	select {
	case t.e.accept <- s:
	default:
		t.c.closeSession(s, CDNTempResources, ErrCodeNone, &ResultError{Err: ErrTooMany})
	}
}

// run is the tunnel's owner goroutine: the only one touching t.c.
func (t *Tunnel) run() {
	defer t.e.wg.Done()
	defer t.e.removeTunnel(t)
	clk := t.e.cfg.Clock
	timer := clk.NewTimer(time.Hour)
	defer timer.Stop()
	for t.c.state != tsDead {
		if d := t.c.NextDeadline(); !d.IsZero() {
			timer.Reset(max(d.Sub(clk.Now()), 0))
		} else {
			timer.Stop()
		}
		select {
		case b := <-t.in:
			t.c.Input(clk.Now(), b)
		case fn := <-t.cmds:
			fn(t.c)
		case <-timer.C():
			t.c.Tick(clk.Now())
		case <-t.stop:
			t.c.Close(clk.Now(), StopShuttingDown, ErrCodeNone, ErrClosed)
			t.c.finish(ErrClosed)
		}
	}
	if t.ownsEndpoint {
		go t.e.Close()
	}
}

// OpenSession places a call (LAC) and waits until it is established.
func (t *Tunnel) OpenSession(ctx context.Context) (*Session, error) {
	var s *Session
	var err error
	if !t.do(func(c *core) {
		s, err = c.OpenSession(t.e.cfg.Clock.Now())
	}) {
		return nil, t.err
	}
	if err != nil {
		return nil, err
	}
	select {
	case <-s.upCh:
		return s, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

// Close sends StopCCN (result 1) and waits until the peer acknowledged it
// or retransmission gave up. A tunnel from Dial also closes its endpoint.
func (t *Tunnel) Close() error {
	t.do(func(c *core) { c.Close(t.e.cfg.Clock.Now(), StopClear, ErrCodeNone, ErrClosed) })
	<-t.done
	if t.ownsEndpoint {
		t.e.Close()
	}
	return nil
}

// Close sends CDN (result 3) for the session.
func (s *Session) Close() error {
	if s.t == nil {
		return nil
	}
	s.t.do(func(c *core) { c.CloseSession(s.t.e.cfg.Clock.Now(), s) })
	return nil
}

// WriteFrame sends one PPP frame as a data message.
func (s *Session) WriteFrame(frame []byte) error { return s.WriteFrame2(frame, nil) }

// WriteFrame2 sends head followed by body as one data message, copying
// once into a pooled buffer (no allocation per packet).
func (s *Session) WriteFrame2(head, body []byte) error {
	if !s.up.Load() {
		return ErrNotEstablished
	}
	n := len(head) + len(body)
	if n > MaxDatagram-DataSeqHeaderLen {
		return ErrFrameTooLarge
	}
	bp := bufPool.Get().(*[]byte)
	b := *bp
	if cap(b) < n+DataSeqHeaderLen {
		b = make([]byte, n+DataSeqHeaderLen)
	}
	b = b[:cap(b)]
	seq := s.seq.Load()
	var ns uint16
	if seq {
		ns = uint16(s.dataNs.Add(1) - 1)
	}
	hl := putDataHeader(b, uint16(s.t.c.pubPeerID.Load()), s.PeerID(), seq, ns)
	copy(b[hl:], head)
	copy(b[hl+len(head):], body)
	_, err := s.t.e.conn.WriteTo(b[:hl+n], s.t.peerAddr())
	*bp = b[:0]
	bufPool.Put(bp)
	if err != nil {
		return err
	}
	s.stats.DataSent.Add(1)
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
