package esp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// IKEHandler receives the IKE datagrams the transport reads. The IKE engine
// implements it. natt reports whether the datagram came on the NAT-T port,
// with the non-ESP marker already stripped (RFC 3948 §2.2). Input is called
// from one transport goroutine, never from the socket readers, so slow IKE
// work (Diffie-Hellman under a flood) cannot stall ESP; b belongs to the
// handler. When the IKE queue is full, datagrams are dropped and counted.
type IKEHandler interface {
	Input(b []byte, local, remote netip.AddrPort, natt bool)
}

// IKEHandlerFunc adapts a function to IKEHandler.
type IKEHandlerFunc func(b []byte, local, remote netip.AddrPort, natt bool)

// Input calls f.
func (f IKEHandlerFunc) Input(b []byte, local, remote netip.AddrPort, natt bool) {
	f(b, local, remote, natt)
}

// TransportConfig configures a Transport.
type TransportConfig struct {
	// IKEConn and NATTConn are already-bound sockets (a *net.UDPConn, or
	// any net.PacketConn whose addresses are *net.UDPAddr or print as
	// "ip:port", e.g. an in-memory pipe in tests); the transport owns them
	// from now on and closes them in Close. When nil, IKEAddr and NATTAddr
	// ("host:port") are bound instead. An empty IKEAddr with a nil IKEConn
	// means no port-500 socket (a client that starts on 4500).
	IKEConn, NATTConn net.PacketConn
	IKEAddr, NATTAddr string
	// IKE receives IKE datagrams from both sockets. Required.
	IKE IKEHandler
	// Clock drives NAT keepalives and the rekey grace period.
	// Default clock.System.
	Clock clock.Clock
	// KeepaliveInterval is the NAT-keepalive period for peers with
	// PeerConfig.Keepalive (RFC 3948 §4; default 20 s, negative disables).
	KeepaliveInterval time.Duration
	// RekeyGrace is how long an old inbound SA keeps decrypting after Rekey
	// installed its successor (default 30 s), unless RemoveSA ends it
	// earlier (on the peer's Delete). Negative: never retire automatically;
	// the composer calls RemoveSA (e.g. on ike.EventChildDown).
	RekeyGrace time.Duration
	// IKEQueue is the number of IKE datagrams buffered for the handler
	// (default 256); beyond it they are dropped (IKE retransmits).
	IKEQueue int
	// ReadQueue is the number of opened L2TP datagrams buffered for the
	// PacketConn reader (default 512); beyond it packets are dropped and
	// counted.
	ReadQueue int
	// SocketBuffer is the receive and send buffer asked for on the NAT-T
	// socket (default 4 MiB; the kernel caps it at net.core.rmem_max /
	// wmem_max). Bursts of ESP beyond it are dropped by the kernel.
	SocketBuffer int
	// Logger receives lifecycle lines and rate-limited warnings. Default:
	// discard.
	Logger *slog.Logger
	// SingleIO reads and writes the NAT-T socket one datagram per system
	// call even where batches are possible (Linux recvmmsg/sendmmsg on a
	// *net.UDPConn or FilteredUDPConn): for comparisons, and as an escape
	// hatch.
	SingleIO bool
	// NoGRO leaves UDP GRO off on the NAT-T socket. By default (Linux 5.0+)
	// a run of same-size datagrams from one peer (a UDP GSO burst, or GRO
	// at the NIC) comes up as one message and is split here: one socket
	// queue entry and one copy per run instead of per datagram.
	NoGRO bool
}

// TransportStats counts datagrams by fate. Per-SA crypto failures are in
// the SAs' Stats.
type TransportStats struct {
	// IKEIn and IKEOut count IKE datagrams received and sent.
	IKEIn, IKEOut atomic.Uint64
	// IKEDrops counts IKE datagrams dropped because the handler was behind.
	IKEDrops atomic.Uint64
	// KeepalivesIn and KeepalivesOut count NAT-keepalive datagrams.
	KeepalivesIn, KeepalivesOut atomic.Uint64
	// ESPIn counts ESP datagrams that opened and passed the selectors;
	// ESPOut counts ESP datagrams handed to the socket (a batched one that
	// the kernel then refuses also counts in SendErrors).
	ESPIn, ESPOut atomic.Uint64
	// UnknownSPI counts ESP datagrams for no installed SA.
	UnknownSPI atomic.Uint64
	// Malformed counts datagrams too short to be ESP or with a bad inner
	// UDP header.
	Malformed atomic.Uint64
	// OpenFailures counts ESP datagrams an SA refused (replay, ICV, padding…).
	OpenFailures atomic.Uint64
	// SelectorDrops counts opened packets outside the SA's selectors
	// (not UDP, or not the L2TP ports).
	SelectorDrops atomic.Uint64
	// QueueDrops counts opened packets dropped because the L2TP reader was
	// too slow.
	QueueDrops atomic.Uint64
	// Rebinds counts peers whose outer address changed (NAT rebinding).
	Rebinds atomic.Uint64
	// EarlyActivations counts pairs made current by their first inbound
	// packet (AddInbound with an outbound SA) rather than by Activate.
	EarlyActivations atomic.Uint64
	// SendErrors counts failed socket writes.
	SendErrors atomic.Uint64
	// NoSA counts L2TP datagrams refused (ErrNoSA) because the peer had no
	// outbound SA yet or any more.
	NoSA atomic.Uint64
	// Oversize counts datagrams larger than a batch slot (2 KiB) dropped
	// because a later one in the same recvmmsg batch reused the shared
	// overflow buffer (rare: large IKE messages; the sender retransmits).
	// With UDP GRO every message has a 64 KiB slot and nothing spills.
	Oversize atomic.Uint64
	// Coalesced counts datagrams that arrived in a UDP GRO message (a run
	// of same-size datagrams from one source handed over as one).
	Coalesced atomic.Uint64
	// Batches counts recvmmsg calls that returned datagrams; ESPIn +
	// IKEIn + KeepalivesIn over Batches is the mean batch size.
	Batches atomic.Uint64
	// SendBatches counts the sendmmsg batches of queued ESP; ESP written
	// inline by a caller that found the socket idle is not in a batch.
	SendBatches atomic.Uint64
}

// Transport owns the IKE (500) and NAT-T (4500) sockets of one end. It
// classifies datagrams on the NAT-T port (RFC 3948 §2.2): a non-ESP marker
// means IKE, a single 0xFF byte is a NAT keepalive, anything else is ESP,
// dispatched by SPI to an installed SA. Opened transport-mode packets carry
// UDP + L2TP; the transport hands the L2TP payload to a net.PacketConn
// (L2TP) whose addresses identify the peer.
//
// ESP is always UDP-encapsulated: raw IP protocol 50 needs a raw socket and
// root and brings nothing on our paths; SoftEther forces NAT-T anyway and
// stock clients accept it (see docs/ARCHITECTURE.md).
type Transport struct {
	cfg   TransportConfig
	log   *slog.Logger
	clock clock.Clock
	ike   *sock // nil when there is no port-500 socket
	natt  *sock
	stats TransportStats
	warn  warnLimiter

	// sas is the inbound SPI table, copied on write under mu and read
	// without a lock by the data path (cf. wireguard-go's keypairs).
	sas atomic.Pointer[map[uint32]inSA]

	mu     sync.Mutex // guards the fields below and writes to sas
	peers  map[*Peer]struct{}
	nextID uint64
	closed bool

	// retiredHook, when set (tests only, before any Rekey), receives each
	// SPI whose grace period ended.
	retiredHook chan uint32
	// tickHook, when set (tests only), is signalled after each keepalive
	// tick has been handled.
	tickHook chan struct{}

	ikeQ    chan ikeDatagram
	l2tp    *l2tpConn
	bufPool sync.Pool // *[]byte of bufSize
	done    chan struct{}
	wg      sync.WaitGroup
}

const bufSize = 2048

// NewTransport binds (or adopts) the sockets and starts one reader
// goroutine per socket plus one for keepalives.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.IKE == nil {
		return nil, errors.New("esp: TransportConfig.IKE is required")
	}
	if cfg.NATTConn == nil && cfg.NATTAddr == "" {
		return nil, errors.New("esp: TransportConfig needs NATTConn or NATTAddr")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = 20 * time.Second
	}
	if cfg.RekeyGrace == 0 {
		cfg.RekeyGrace = 30 * time.Second
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = 4 << 20
	}
	if cfg.ReadQueue <= 0 {
		cfg.ReadQueue = 512
	}
	if cfg.IKEQueue <= 0 {
		cfg.IKEQueue = 256
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Transport{cfg: cfg, log: log, clock: cfg.Clock, peers: map[*Peer]struct{}{}, done: make(chan struct{})}
	t.warn.clock = cfg.Clock
	t.bufPool.New = func() any { b := make([]byte, bufSize); return &b }
	empty := map[uint32]inSA{}
	t.sas.Store(&empty)
	natt, ike := cfg.NATTConn, cfg.IKEConn
	if natt == nil {
		c, err := listen(cfg.NATTAddr)
		if err != nil {
			return nil, err
		}
		natt = c
	}
	if ike == nil && cfg.IKEAddr != "" {
		c, err := listen(cfg.IKEAddr)
		if err != nil {
			natt.Close()
			return nil, err
		}
		ike = c
	}
	t.natt = newSock(natt)
	if ike != nil {
		t.ike = newSock(ike)
	}
	if t.natt.udp != nil {
		// Best effort: the kernel caps the size without failing.
		_ = t.natt.udp.SetReadBuffer(cfg.SocketBuffer)
		_ = t.natt.udp.SetWriteBuffer(cfg.SocketBuffer)
		if !cfg.SingleIO {
			t.natt.batch = newBatchConn(t.natt.udp)
			if t.natt.batch != nil && !cfg.NoGRO {
				t.natt.batch.enableGRO()
			}
		}
	}
	t.l2tp = &l2tpConn{t: t, ch: make(chan inbound, cfg.ReadQueue), closed: make(chan struct{}), kick: make(chan struct{}, 1)}
	t.ikeQ = make(chan ikeDatagram, cfg.IKEQueue)
	t.wg.Add(2)
	go t.ikeLoop()
	if t.natt.batch != nil {
		t.natt.out = newSender(t, t.natt)
		t.wg.Add(1)
		go t.natt.out.run()
		go t.readBatchLoop(t.natt)
	} else {
		go t.readLoop(t.natt, true)
	}
	if t.ike != nil {
		t.wg.Add(1)
		go t.readLoop(t.ike, false)
	}
	if cfg.KeepaliveInterval > 0 {
		ka := t.clock.NewTimer(cfg.KeepaliveInterval)
		t.wg.Add(1)
		go t.keepaliveLoop(ka)
	}
	log.Info("esp transport started", "natt", t.natt.pc.LocalAddr().String(), "ike", t.IKEAddr().String())
	return t, nil
}

func listen(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	return c, nil
}

// NATTAddr returns the bound NAT-T socket address.
func (t *Transport) NATTAddr() netip.AddrPort { return t.natt.addrPort() }

// IKEAddr returns the bound IKE socket address (zero if there is none).
func (t *Transport) IKEAddr() netip.AddrPort {
	if t.ike == nil {
		return netip.AddrPort{}
	}
	return t.ike.addrPort()
}

// Stats returns the transport's counters.
func (t *Transport) Stats() *TransportStats { return &t.stats }

// L2TP returns the PacketConn the L2TP layer reads and writes: ReadFrom
// yields the L2TP payload of each opened ESP packet with an *Addr naming the
// peer; WriteTo(payload, *Addr) wraps it in UDP and ESP and sends it.
func (t *Transport) L2TP() net.PacketConn { return t.l2tp }

// SendIKE sends one IKE message to remote. With natt it goes from the NAT-T
// socket behind a non-ESP marker (RFC 3948 §2.2), else from the IKE
// socket. local is accepted for symmetry with IKEHandler.Input; each port
// has one socket, so it does not select anything.
func (t *Transport) SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	_ = local
	if !natt {
		if t.ike == nil {
			return errors.New("esp: no IKE (port 500) socket")
		}
		if _, err := t.ike.writeTo(b, remote); err != nil {
			t.stats.SendErrors.Add(1)
			return fmt.Errorf("esp: send IKE: %w", err)
		}
		t.stats.IKEOut.Add(1)
		return nil
	}
	var pkt []byte
	var bp *[]byte
	if len(b)+NonESPMarkerLen <= bufSize {
		bp = t.bufPool.Get().(*[]byte)
		defer t.bufPool.Put(bp)
		pkt = (*bp)[:NonESPMarkerLen+len(b)]
	} else {
		pkt = make([]byte, NonESPMarkerLen+len(b))
	}
	clear(pkt[:NonESPMarkerLen])
	copy(pkt[NonESPMarkerLen:], b)
	if _, err := t.natt.writeTo(pkt, remote); err != nil {
		t.stats.SendErrors.Add(1)
		return fmt.Errorf("esp: send IKE: %w", err)
	}
	t.stats.IKEOut.Add(1)
	return nil
}

// SetL2TPHandler makes the transport hand every opened L2TP datagram to
// fn, on the socket's reader goroutine, instead of queueing a copy for the
// L2TP PacketConn's ReadFrom: no copy, no channel, no goroutine hand-off
// per packet (an L2TP endpoint's Input is such an fn). b is valid only
// during the call; fn must not block for long, since the socket (IKE on
// the NAT-T port too) is not read meanwhile. Datagrams opened before the
// call are still queued for ReadFrom. nil goes back to queueing.
func (t *Transport) SetL2TPHandler(fn func(b []byte, from *Addr)) {
	if fn == nil {
		t.l2tp.handler.Store(nil)
		return
	}
	t.l2tp.handler.Store(&fn)
}

// Hold tells the transport that the caller is about to send a burst of
// datagrams back to back (the gateway's TUN reader with one split GSO
// read in hand): until the matching Release they are queued, and written
// together in full sendmmsg batches (each run to one peer one UDP GSO
// message), rather than the first inline and the rest in whatever batches
// the sender goroutine happens to find. Holds nest; every Hold needs a
// Release, which should follow within the burst (microseconds): other
// goroutines' datagrams wait for it too. Without batched I/O (no
// sendmmsg on this platform or socket) both do nothing.
func (t *Transport) Hold() {
	if t.natt.out != nil {
		t.natt.out.hold()
	}
}

// Release ends a Hold; the queued datagrams go out.
func (t *Transport) Release() {
	if t.natt.out != nil {
		t.natt.out.release()
	}
}

// Close stops the readers and the keepalive loop and closes the sockets.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	close(t.done)
	t.l2tp.close()
	if t.natt.out != nil {
		t.natt.out.close()
	}
	err := t.natt.pc.Close()
	if t.ike != nil {
		t.ike.pc.Close()
	}
	t.wg.Wait()
	t.log.Info("esp transport closed")
	return err
}

// readFailed handles a read loop's error: true when the socket is closed
// or the transport is closing (the loop ends); otherwise the error is
// logged, rate-limited, and the loop goes on.
func (t *Transport) readFailed(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	select {
	case <-t.done:
		return true
	default:
	}
	t.warn.log(t.log, "read error", "err", err)
	return false
}

// readLoop reads one socket until it is closed.
func (t *Transport) readLoop(c *sock, natt bool) {
	defer t.wg.Done()
	buf := make([]byte, 1<<16)
	local := c.addrPort()
	for {
		n, from, err := c.readFrom(buf)
		if err != nil {
			if errors.Is(err, errAddrType) {
				t.stats.Malformed.Add(1)
				t.warn.log(t.log, "datagram from a non-UDP address dropped")
				continue
			}
			if t.readFailed(err) {
				return
			}
			continue
		}
		b := buf[:n]
		if c.admit != nil && !c.admit(b, from) {
			continue
		}
		if !natt {
			t.queueIKE(b, local, from, false)
			continue
		}
		t.classify(b, local, from)
	}
}

// readBatchLoop reads the NAT-T socket with recvmmsg until it is closed:
// one system call and at most one wake-up per batch instead of per
// datagram.
func (t *Transport) readBatchLoop(c *sock) {
	defer t.wg.Done()
	local := c.addrPort()
	b := c.batch
	defer b.release()
	for {
		n, err := b.read()
		if err != nil {
			if t.readFailed(err) {
				return
			}
			continue
		}
		if n > 0 {
			t.stats.Batches.Add(1)
			if k := b.coalescedCount(); k > 0 {
				t.stats.Coalesced.Add(uint64(k))
			}
		}
		for i := range n {
			p, from, ok, err := b.msg(i)
			if err != nil {
				t.stats.Malformed.Add(1)
				t.warn.log(t.log, "datagram from a non-IP address dropped")
				continue
			}
			if !ok {
				t.stats.Oversize.Add(1)
				t.warn.log(t.log, "large datagram dropped (overflow buffer reused in its batch)", "peer", from)
				continue
			}
			if c.admit != nil && !c.admit(p, from) {
				continue
			}
			t.classify(p, local, from)
		}
	}
}

// classify dispatches one datagram from the NAT-T port (RFC 3948 §2.2).
func (t *Transport) classify(b []byte, local, from netip.AddrPort) {
	switch {
	case len(b) == 1 && b[0] == NATKeepalive:
		t.stats.KeepalivesIn.Add(1)
	case len(b) >= NonESPMarkerLen && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0:
		t.queueIKE(b[NonESPMarkerLen:], local, from, true)
	case len(b) < HeaderLen:
		t.stats.Malformed.Add(1)
		t.warn.log(t.log, "short datagram on NAT-T port", "peer", from, "len", len(b))
	default:
		t.inputESP(b, from)
	}
}

type ikeDatagram struct {
	b             []byte
	local, remote netip.AddrPort
	natt          bool
}

// queueIKE copies an IKE datagram out of the read buffer and queues it for
// the IKE goroutine. IKE is not the hot path; the copy allocates.
func (t *Transport) queueIKE(b []byte, local, from netip.AddrPort, natt bool) {
	t.stats.IKEIn.Add(1)
	select {
	case t.ikeQ <- ikeDatagram{b: append([]byte(nil), b...), local: local, remote: from, natt: natt}:
	default:
		t.stats.IKEDrops.Add(1)
		t.warn.log(t.log, "IKE queue full, datagram dropped", "peer", from)
	}
}

// ikeLoop hands queued IKE datagrams to the handler, one at a time.
func (t *Transport) ikeLoop() {
	defer t.wg.Done()
	for {
		select {
		case <-t.done:
			return
		case d := <-t.ikeQ:
			t.cfg.IKE.Input(d.b, d.local, d.remote, d.natt)
		}
	}
}
