package esp

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// PeerConfig describes the far end of a pair of SAs.
type PeerConfig struct {
	// Remote is the peer's outer address and port (its NAT-T port, after
	// the float to 4500). It follows the peer when an authenticated packet
	// arrives from elsewhere (NAT rebinding, RFC 3948 §5.2's concern).
	Remote netip.AddrPort
	// LocalPort is our inner UDP port, the selector's local side
	// (default 1701, RFC 3193 §4).
	LocalPort uint16
	// RemotePort is the peer's inner UDP port; 0 accepts any (clients
	// behind NAT often use an ephemeral source port) and replies go to the
	// port the packet came from.
	RemotePort uint16
	// Keepalive makes the transport send NAT keepalives to the peer (set it
	// when NAT-D showed that we are behind a NAT, RFC 3947 §4).
	Keepalive bool
	// Name is a label for logs and for Addr.String (e.g. the IKE identity).
	Name string
}

// Peer is one IPsec peer seen through the transport: its current outbound
// SA, its inbound SAs (the current one and any still in their rekey grace
// period), and its outer address.
type Peer struct {
	t          *Transport
	id         uint64
	label      string // "esp:<id>/<name or first outer address>"
	localPort  uint16
	remotePort uint16
	keepalive  bool

	remote atomic.Pointer[netip.AddrPort]
	out    atomic.Pointer[SA]
	sent   atomic.Bool // ESP sent since the last keepalive tick
	// received: ESP carrying L2TP opened since the last TakeReceived. Set
	// by the reader goroutine (a load first: no store, so no cache-line
	// traffic, while it is already set).
	received atomic.Bool
	addr     atomic.Pointer[Addr] // last Addr handed out (inner port cache)

	// Guarded by t.mu.
	in      []uint32
	removed bool
}

// Remote returns the peer's current outer address.
func (p *Peer) Remote() netip.AddrPort { return *p.remote.Load() }

// TakeReceived reports whether ESP carrying L2TP arrived from the peer
// since the last call (authenticated traffic: dead peer detection can
// stay quiet, RFC 3706 §5.5), and clears the mark.
func (p *Peer) TakeReceived() bool { return p.received.Swap(false) }

// Outbound returns the SA currently used for sending.
func (p *Peer) Outbound() *SA { return p.out.Load() }

// ID returns the transport-unique number of the peer.
func (p *Peer) ID() uint64 { return p.id }

// Addr returns the PacketConn address for the peer's inner port port
// (0: the configured or last seen one).
func (p *Peer) Addr(port uint16) *Addr {
	if port == 0 {
		if a := p.addr.Load(); a != nil {
			return a
		}
		port = p.remotePort
		if port == 0 {
			port = L2TPPort
		}
	}
	if a := p.addr.Load(); a != nil && a.port == port {
		return a
	}
	a := &Addr{peer: p, port: port, s: p.label + ":" + strconv.Itoa(int(port))}
	p.addr.Store(a)
	return a
}

type inSA struct {
	sa       *SA
	peer     *Peer
	activate *SA // outbound SA to switch to on the first packet (AddInbound)
}

// AddSA installs a new pair of SAs for a new peer and returns it. in must
// be Inbound, out Outbound or nil: a Quick Mode responder installs the
// inbound SA when it sends HASH(2) (RFC 2409 §5.5), before it may send, and
// Activate adds the outbound SA later; until then writes fail with ErrNoSA.
func (t *Transport) AddSA(in, out *SA, pc PeerConfig) (*Peer, error) {
	if in == nil || in.Direction() != Inbound || (out != nil && out.Direction() != Outbound) {
		return nil, fmt.Errorf("esp: AddSA needs an inbound and an outbound SA")
	}
	if !pc.Remote.IsValid() {
		return nil, fmt.Errorf("esp: AddSA: invalid remote address")
	}
	if pc.LocalPort == 0 {
		pc.LocalPort = L2TPPort
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if _, dup := (*t.sas.Load())[in.SPI()]; dup {
		return nil, fmt.Errorf("esp: inbound SPI %#08x already installed", in.SPI())
	}
	p := t.newPeerLocked(pc)
	if out != nil {
		p.out.Store(out)
	}
	t.addInboundLocked(in, p, nil)
	t.log.Info("esp SA pair installed", "peer", p.Remote(), "spi_in", spiHex(in.SPI()), "spi_out", spiHex(spiOf(out)), "suite", in.Suite().String())
	return p, nil
}

// NewPeer adds a peer without SAs (AddInbound then gives it its first
// pair); writes to it fail with ErrNoSA until it has an outbound SA.
func (t *Transport) NewPeer(pc PeerConfig) (*Peer, error) {
	if !pc.Remote.IsValid() {
		return nil, fmt.Errorf("esp: NewPeer: invalid remote address")
	}
	if pc.LocalPort == 0 {
		pc.LocalPort = L2TPPort
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	return t.newPeerLocked(pc), nil
}

func (t *Transport) newPeerLocked(pc PeerConfig) *Peer {
	t.nextID++
	name := pc.Name
	if name == "" {
		name = pc.Remote.String()
	}
	p := &Peer{t: t, id: t.nextID, label: "esp:" + strconv.FormatUint(t.nextID, 10) + "/" + name,
		localPort: pc.LocalPort, remotePort: pc.RemotePort, keepalive: pc.Keepalive}
	remote := netip.AddrPortFrom(pc.Remote.Addr().Unmap(), pc.Remote.Port())
	p.remote.Store(&remote)
	t.peers[p] = struct{}{}
	return p
}

// AddInbound installs one more inbound SA for an existing peer and leaves
// its outbound SA and its other inbound SAs alone. A Quick Mode responder
// calls it when it sends HASH(2): the initiator may send on the new SPI as
// soon as it has sent HASH(3), and that ESP can overtake HASH(3) (RFC 2409
// §5.5). out (optional) is the pair's outbound SA: the first packet that
// opens on in proves that the initiator has the pair, so out becomes the
// sending SA then (as with Activate), and replies to that packet are not
// held back until HASH(3) is processed. Activate does it otherwise.
func (t *Transport) AddInbound(p *Peer, in, out *SA) error {
	if in == nil || in.Direction() != Inbound || (out != nil && out.Direction() != Outbound) {
		return fmt.Errorf("esp: AddInbound needs an inbound SA (and an outbound one or nil)")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkNewInboundLocked("AddInbound", p, in); err != nil {
		return err
	}
	t.addInboundLocked(in, p, out)
	t.log.Debug("esp inbound SA added", "peer", p.Remote(), "spi_in", spiHex(in.SPI()))
	return nil
}

// Activate makes (in, out) the peer's current pair: in is installed if
// AddInbound has not done so already, out becomes the sending SA at once,
// and the peer's other inbound SAs keep decrypting for RekeyGrace (or until
// RemoveSA), as with Rekey.
func (t *Transport) Activate(p *Peer, in, out *SA) error {
	if err := checkPair("Activate", in, out); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if p.removed {
		return fmt.Errorf("esp: Activate of a removed peer")
	}
	if e, ok := (*t.sas.Load())[in.SPI()]; ok && (e.peer != p || e.sa != in) {
		return fmt.Errorf("esp: inbound SPI %#08x already installed", in.SPI())
	} else if !ok {
		t.addInboundLocked(in, p, nil)
	} else if e.activate != nil {
		t.clearActivateLocked(in.SPI())
	}
	t.activateLocked(p, in, out)
	return nil
}

// activateLocked switches p to out and retires its inbound SAs other than
// in; t.mu is held.
func (t *Transport) activateLocked(p *Peer, in, out *SA) {
	var old []uint32
	for _, spi := range p.in {
		if spi != in.SPI() {
			old = append(old, spi)
		}
	}
	p.out.Store(out)
	for _, spi := range old {
		t.retire(spi)
	}
	t.log.Info("esp SA pair activated", "peer", p.Remote(), "spi_in", spiHex(in.SPI()), "spi_out", spiHex(out.SPI()), "old_in", len(old))
}

// clearActivateLocked forgets the pending outbound SA of inbound SA spi;
// t.mu is held.
func (t *Transport) clearActivateLocked(spi uint32) {
	cur := *t.sas.Load()
	next := make(map[uint32]inSA, len(cur))
	for k, v := range cur {
		next[k] = v
	}
	e := next[spi]
	e.activate = nil
	next[spi] = e
	t.sas.Store(&next)
}

// activateOnFirst makes the outbound SA given to AddInbound current once a
// packet opened on its inbound SA (off the fast path: only the first
// packet of such a pair gets here).
func (t *Transport) activateOnFirst(spi uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := (*t.sas.Load())[spi]
	if !ok || e.activate == nil || e.peer.removed || t.closed {
		return
	}
	t.clearActivateLocked(spi)
	t.stats.EarlyActivations.Add(1)
	t.activateLocked(e.peer, e.sa, e.activate)
}

// spiOf returns sa's SPI, 0 for nil.
func spiOf(sa *SA) uint32 {
	if sa == nil {
		return 0
	}
	return sa.SPI()
}

// checkNewInboundLocked refuses to install in for p (operation op) when
// the transport is closed, p was removed, or in's SPI is already in use.
// t.mu is held.
func (t *Transport) checkNewInboundLocked(op string, p *Peer, in *SA) error {
	if t.closed {
		return ErrClosed
	}
	if p.removed {
		return fmt.Errorf("esp: %s for a removed peer", op)
	}
	if _, dup := (*t.sas.Load())[in.SPI()]; dup {
		return fmt.Errorf("esp: inbound SPI %#08x already installed", in.SPI())
	}
	return nil
}

// Rekey installs a new pair for an existing peer, make-before-break: the
// new outbound SA is used at once, the new inbound SA is live at once, and
// the previous inbound SAs keep decrypting for RekeyGrace (or until
// RemoveSA), so traffic in flight on the old SA is not lost.
func (t *Transport) Rekey(p *Peer, in, out *SA) error {
	if err := checkPair("Rekey", in, out); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkNewInboundLocked("Rekey", p, in); err != nil {
		return err
	}
	old := append([]uint32(nil), p.in...)
	t.addInboundLocked(in, p, nil)
	p.out.Store(out)
	for _, spi := range old {
		t.retire(spi)
	}
	t.log.Info("esp SA pair rekeyed", "peer", p.Remote(), "spi_in", spiHex(in.SPI()), "spi_out", spiHex(out.SPI()), "old_in", len(old))
	return nil
}

// retire removes an inbound SA after the grace period. The timer is made
// here, synchronously, so that a fake clock advanced right after Rekey
// returns fires it deterministically.
func (t *Transport) retire(spi uint32) {
	if t.cfg.RekeyGrace < 0 {
		return
	}
	tm := t.clock.NewTimer(t.cfg.RekeyGrace)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		select {
		case <-tm.C():
			t.RemoveSA(spi)
			if t.retiredHook != nil {
				t.retiredHook <- spi
			}
		case <-t.done:
			tm.Stop()
		}
	}()
}

func (t *Transport) addInboundLocked(in *SA, p *Peer, activate *SA) {
	cur := *t.sas.Load()
	next := make(map[uint32]inSA, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[in.SPI()] = inSA{sa: in, peer: p, activate: activate}
	t.sas.Store(&next)
	p.in = append(p.in, in.SPI())
}

// RemoveSA removes the inbound SA with this SPI (e.g. on the peer's IKE
// Delete, or when its grace period ends). The peer stays; its outbound SA
// is untouched. Removing an unknown SPI does nothing.
func (t *Transport) RemoveSA(spi uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.sas.Load()
	e, ok := cur[spi]
	if !ok {
		return
	}
	next := make(map[uint32]inSA, len(cur))
	for k, v := range cur {
		if k != spi {
			next[k] = v
		}
	}
	t.sas.Store(&next)
	for i, s := range e.peer.in {
		if s == spi {
			e.peer.in = append(e.peer.in[:i], e.peer.in[i+1:]...)
			break
		}
	}
	t.log.Debug("esp inbound SA removed", "spi", spiHex(spi), "peer", e.peer.Remote())
}

// RemovePair removes an SA pair (ike.EventChildDown): the inbound SA inSPI
// and, if it is still the peer's current outbound SA, the outbound SA
// outSPI, after which writes to the peer fail with ErrNoSA until Rekey
// installs a new pair. After a rekey the old pair's outbound SA is no
// longer current, so removing the old pair leaves traffic alone.
func (t *Transport) RemovePair(inSPI, outSPI uint32) {
	e, ok := (*t.sas.Load())[inSPI]
	t.RemoveSA(inSPI)
	if !ok {
		return
	}
	if out := e.peer.out.Load(); out != nil && out.SPI() == outSPI {
		e.peer.out.CompareAndSwap(out, nil)
	}
}

// RemovePeer removes all of the peer's SAs; writes to its address fail
// with ErrNoSA afterwards.
func (t *Transport) RemovePeer(p *Peer) {
	t.mu.Lock()
	spis := append([]uint32(nil), p.in...)
	p.removed = true
	delete(t.peers, p)
	p.out.Store(nil)
	t.mu.Unlock()
	for _, spi := range spis {
		t.RemoveSA(spi)
	}
	t.log.Info("esp peer removed", "peer", p.Remote())
}

// inputESP opens one ESP datagram and queues its L2TP payload.
func (t *Transport) inputESP(b []byte, from netip.AddrPort) {
	spi := Header(b).SPI()
	e, ok := (*t.sas.Load())[spi]
	if !ok {
		t.stats.UnknownSPI.Add(1)
		t.warn.log(t.log, "ESP for unknown SPI", "spi", spiHex(spi), "peer", from)
		return
	}
	payload, nh, newest, err := e.sa.open(b)
	if err != nil {
		t.stats.OpenFailures.Add(1)
		t.warn.log(t.log, "ESP packet dropped", "spi", spiHex(spi), "peer", from, "reason", err)
		return
	}
	p := e.peer
	if e.activate != nil {
		t.activateOnFirst(spi)
	}
	// Transport mode carrying L2TP: a UDP header to our L2TP port
	// (RFC 3193 §4). The UDP checksum is not verified: it covers the
	// peer's original addresses, which NAT changed, and the ESP ICV
	// already protects the bytes (RFC 3948 §3.1.2).
	if nh != NextHeaderUDP || len(payload) < UDPHeaderLen {
		t.stats.SelectorDrops.Add(1)
		t.warn.log(t.log, "ESP payload is not UDP", "spi", spiHex(spi), "next_header", nh)
		return
	}
	src := binary.BigEndian.Uint16(payload[0:2])
	dst := binary.BigEndian.Uint16(payload[2:4])
	ulen := int(binary.BigEndian.Uint16(payload[4:6]))
	if dst != p.localPort || (p.remotePort != 0 && src != p.remotePort) {
		t.stats.SelectorDrops.Add(1)
		t.warn.log(t.log, "ESP payload outside selectors", "spi", spiHex(spi), "src_port", src, "dst_port", dst)
		return
	}
	if ulen < UDPHeaderLen || ulen > len(payload) {
		t.stats.Malformed.Add(1)
		t.warn.log(t.log, "bad inner UDP length", "spi", spiHex(spi), "len", ulen)
		return
	}
	if cur := p.remote.Load(); *cur != from && newest {
		// Only authenticated packets that advanced the replay window move
		// the peer: a delayed or replayed copy sent from elsewhere cannot
		// redirect its traffic.
		nf := from
		p.remote.Store(&nf)
		t.stats.Rebinds.Add(1)
		t.log.Info("esp peer address changed", "peer", from, "old", *cur, "spi", spiHex(spi))
	}
	t.stats.ESPIn.Add(1)
	if !p.received.Load() {
		p.received.Store(true)
	}
	t.l2tp.deliver(payload[UDPHeaderLen:ulen], p.Addr(src))
}

// keepaliveLoop sends NAT keepalives (RFC 3948 §2.3, §4) to the peers that
// want them, every KeepaliveInterval.
func (t *Transport) keepaliveLoop(tm clock.Timer) {
	defer t.wg.Done()
	ka := []byte{NATKeepalive}
	var targets []netip.AddrPort
	for {
		select {
		case <-t.done:
			tm.Stop()
			return
		case <-tm.C():
		}
		// Re-arm before sending, so that the next period is counted from
		// this expiry (and a test that saw the keepalive may advance the
		// clock again at once).
		tm.Reset(t.cfg.KeepaliveInterval)
		targets = targets[:0]
		t.mu.Lock()
		for p := range t.peers {
			// RFC 3948 §4: a keepalive is only needed when nothing else
			// went to the peer during the interval.
			if p.keepalive && !p.sent.Swap(false) {
				targets = append(targets, p.Remote())
			}
		}
		t.mu.Unlock()
		for _, r := range targets {
			if _, err := t.natt.writeTo(ka, r); err != nil {
				t.stats.SendErrors.Add(1)
				continue
			}
			t.stats.KeepalivesOut.Add(1)
		}
		if t.tickHook != nil {
			t.tickHook <- struct{}{}
		}
	}
}

func spiHex(spi uint32) string { return fmt.Sprintf("%08x", spi) }

// warnLimiter lets one warning through per second, so that a flood of bad
// packets costs a counter increment each, not a log line each.
type warnLimiter struct {
	clock      clock.Clock
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (w *warnLimiter) log(l *slog.Logger, msg string, args ...any) {
	now := w.clock.Now()
	w.mu.Lock()
	if now.Sub(w.last) < time.Second {
		w.suppressed++
		w.mu.Unlock()
		return
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	w.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.Warn(msg, args...)
}

// checkPair refuses anything but an inbound and an outbound SA for op.
func checkPair(op string, in, out *SA) error {
	if in == nil || out == nil || in.Direction() != Inbound || out.Direction() != Outbound {
		return fmt.Errorf("esp: %s needs an inbound and an outbound SA", op)
	}
	return nil
}
