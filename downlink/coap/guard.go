package coap

import (
	"context"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
	"github.com/pion/transport/v5/deadline"
)

// The guard is the UDP listener under pion: it owns the socket, applies a
// cheap sanity check to every datagram before pion sees it, counts and
// logs (rate-limited) what fails, and routes the rest to per-peer conns by
// Connection ID (RFC 9146) or remote address, as pion's own listener does.
//
// What it covers: datagrams that are not a sequence of well-formed DTLS
// 1.0/1.2 record headers (unknown content type, wrong version, a length
// running past the datagram or over the RFC 6347 maximum, trailing bytes),
// and well-formed records from a peer with no session that do not start a
// handshake. What it cannot see: records that pass this check but fail
// pion's own processing (bad MAC or AEAD tag, replayed sequence numbers,
// malformed handshake bodies); those are dropped inside pion uncounted, or
// show up as HandshakeFailures.

// GarbageReason says why the guard dropped a datagram.
type GarbageReason int

// Reasons, in the order the check finds them.
const (
	GarbageOK          GarbageReason = iota
	GarbageShort                     // shorter than a record header
	GarbageContentType               // not change_cipher_spec, alert, handshake, application_data or tls12_cid
	GarbageVersion                   // record version not DTLS 1.0 or 1.2
	GarbageLength                    // record length zero, past the datagram or over 2^14+2048
	GarbageNoSession                 // from an unknown peer and not a handshake in epoch 0
	numGarbageReasons
)

var garbageNames = [...]string{"ok", "short", "content_type", "version", "length", "no_session"}

func (r GarbageReason) String() string {
	if r < 0 || int(r) >= len(garbageNames) {
		return "unknown"
	}
	return garbageNames[r]
}

const (
	recordHeaderLen = 13
	maxRecordLen    = 1<<14 + 2048 // RFC 6347 section 4.1 / RFC 5246 section 6.2.3
	ctCID           = 25           // tls12_cid, RFC 9146
	guardBacklog    = 128
	guardQueue      = 32
	guardMTU        = 8192
)

// ClassifyDatagram checks that b is one or more DTLS record headers whose
// lengths exactly cover it; cidLen is the length of the Connection IDs the
// server hands out (tls12_cid records carry one). It never panics.
func ClassifyDatagram(b []byte, cidLen int) GarbageReason {
	if len(b) == 0 {
		return GarbageShort
	}
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			return GarbageShort
		}
		hdr := recordHeaderLen
		switch b[0] {
		case 20, 21, 22, 23:
		case ctCID:
			hdr += cidLen
			if len(b) < hdr {
				return GarbageShort
			}
		default:
			return GarbageContentType
		}
		if b[1] != 0xfe || (b[2] != 0xfd && b[2] != 0xff) {
			return GarbageVersion
		}
		n := int(b[hdr-2])<<8 | int(b[hdr-1])
		if n == 0 || n > maxRecordLen || hdr+n > len(b) { // pion refuses empty records too
			return GarbageLength
		}
		b = b[hdr+n:]
	}
	return GarbageOK
}

// startsHandshake reports a datagram whose first record is a handshake
// record in epoch 0 (a ClientHello from a new peer).
func startsHandshake(b []byte) bool {
	return len(b) >= recordHeaderLen && b[0] == 22 && b[3] == 0 && b[4] == 0
}

// recordCID returns the Connection ID of the first tls12_cid record.
func recordCID(b []byte, cidLen int) (string, bool) {
	for len(b) >= recordHeaderLen {
		hdr := recordHeaderLen
		if b[0] == ctCID {
			hdr += cidLen
			if len(b) < hdr {
				return "", false
			}
			return string(b[11 : 11+cidLen]), true
		}
		n := int(b[hdr-2])<<8 | int(b[hdr-1])
		if hdr+n > len(b) {
			return "", false
		}
		b = b[hdr+n:]
	}
	return "", false
}

// serverHelloCID returns the Connection ID the server announced in an
// outgoing ServerHello (the one the peer will put in its records).
func serverHelloCID(b []byte) (string, bool) {
	pkts, err := recordlayer.UnpackDatagram(b)
	if err != nil || len(pkts) == 0 {
		return "", false
	}
	for _, pkt := range pkts {
		if len(pkt) < recordlayer.FixedHeaderSize+handshake.HeaderLength || pkt[0] != 22 {
			continue
		}
		var hh handshake.Header
		if err := hh.Unmarshal(pkt[recordlayer.FixedHeaderSize:]); err != nil || hh.Type != handshake.TypeServerHello {
			continue
		}
		var sh handshake.MessageServerHello
		if err := sh.Unmarshal(pkt[recordlayer.FixedHeaderSize+handshake.HeaderLength:]); err != nil {
			continue
		}
		for _, ext := range sh.Extensions {
			if e, ok := ext.(*extension.ConnectionID); ok && len(e.CID) > 0 {
				return string(e.CID), true
			}
		}
	}
	return "", false
}

// guardListener is a pion dtlsnet.PacketListener over one UDP socket.
type guardListener struct {
	pc     *net.UDPConn
	s      *Server
	cidLen int
	accept chan *guardConn
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[string]*guardConn // guarded by mu: by remote address and by "cid:"+CID
}

func newGuardListener(pc *net.UDPConn, s *Server, cidLen int) *guardListener {
	l := &guardListener{pc: pc, s: s, cidLen: cidLen, accept: make(chan *guardConn, guardBacklog),
		done: make(chan struct{}), conns: map[string]*guardConn{}}
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

func (l *guardListener) readLoop() {
	defer l.wg.Done()
	buf := make([]byte, guardMTU)
	for {
		n, raddr, err := l.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		if r := ClassifyDatagram(b, l.cidLen); r != GarbageOK {
			l.s.garbage(r, raddr, n)
			continue
		}
		c := l.route(raddr, b)
		if c == nil {
			continue
		}
		select {
		case c.in <- packet{b: append([]byte(nil), b...), from: raddr}:
		default: // the conn is not reading: drop like a full socket buffer
		}
	}
}

// route finds the conn for a datagram, creating one for a new peer's
// handshake; nil means drop (counted).
func (l *guardListener) route(raddr net.Addr, b []byte) *guardConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cidLen > 0 {
		if cid, ok := recordCID(b, l.cidLen); ok {
			if c := l.conns["cid:"+cid]; c != nil {
				return c
			}
		}
	}
	if c := l.conns[raddr.String()]; c != nil {
		return c
	}
	if !startsHandshake(b) {
		l.s.garbage(GarbageNoSession, raddr, len(b))
		return nil
	}
	select {
	case <-l.done:
		return nil
	default:
	}
	c := &guardConn{l: l, raddr: raddr, in: make(chan packet, guardQueue), done: make(chan struct{}),
		rdl: deadline.New(), wdl: deadline.New()}
	select {
	case l.accept <- c:
		l.conns[raddr.String()] = c
		return c
	default:
		l.s.Stats.Backlog.Add(1)
		return nil
	}
}

type packet struct {
	b    []byte
	from net.Addr
}

// guardConn is one peer's net.PacketConn for pion.
type guardConn struct {
	l     *guardListener
	raddr net.Addr
	in    chan packet
	done  chan struct{}
	once  sync.Once
	rdl   *deadline.Deadline
	wdl   *deadline.Deadline

	mu         sync.Mutex
	cid        string // guarded by mu
	raddrFreed bool   // guarded by mu
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
	c.mu.Lock()
	if c.cid == "" && c.l.cidLen > 0 && startsHandshake(b) { // ServerHello: handshake, epoch 0
		if cid, ok := serverHelloCID(b); ok {
			c.cid = cid
			c.l.mu.Lock()
			c.l.conns["cid:"+cid] = c
			c.l.mu.Unlock()
		}
	}
	// Once the peer moved (NAT rebinding, routed by CID), free the old
	// address for another peer, as pion's listener does.
	if c.cid != "" && !c.raddrFreed && addr.String() != c.raddr.String() {
		c.l.mu.Lock()
		if c.l.conns[c.raddr.String()] == c {
			delete(c.l.conns, c.raddr.String())
		}
		c.l.mu.Unlock()
		c.raddrFreed = true
	}
	c.mu.Unlock()
	select {
	case <-c.wdl.Done():
		return 0, context.DeadlineExceeded
	default:
	}
	return c.l.pc.WriteTo(b, addr)
}

func (c *guardConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.mu.Lock()
		cid := c.cid
		c.mu.Unlock()
		c.l.mu.Lock()
		if cid != "" && c.l.conns["cid:"+cid] == c {
			delete(c.l.conns, "cid:"+cid)
		}
		if c.l.conns[c.raddr.String()] == c {
			delete(c.l.conns, c.raddr.String())
		}
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
