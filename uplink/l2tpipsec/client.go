package l2tpipsec

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// L2TPVendorName is the Vendor-Name AVP the client (our bridge) sends; the
// gateway recognises the bridge by it (peerid.FleetgateBridge).
const L2TPVendorName = "fleetgate-bridge"

// Tunnel is an established client uplink: IKE initiator, ESP transport, L2TP
// LAC tunnel with one session, PPP client with IPCP opened. It carries IPv4
// packets until it fails (Done, Err) or is closed.
type Tunnel struct {
	cfg ClientConfig
	log *slog.Logger
	gw  netip.AddrPort // configured IKE address

	eng *ike.Engine
	tr  *esp.Transport
	// peerCert is the gateway's certificate from the last phase 1 (nil
	// with a PSK), so a caller can drop a tunnel whose gateway was revoked.
	peerCert atomic.Pointer[x509.Certificate]
	// Set during Dial, read-only afterwards.
	ep   *l2tp.Endpoint
	ltun *l2tp.Tunnel
	sess *l2tp.Session
	ppp  *ppp.Conn

	stats Stats
	esp   esp.Stats
	l2tp  l2tp.Stats
	pppSt ppp.Stats
	packetPath
	phase atomic.Uint32

	// mu guards the IPsec bookkeeping, written from IKE's event callback.
	mu       sync.Mutex
	peer     *esp.Peer
	children map[uint32]*ike.ChildSA  // by inbound SPI
	pending  map[*ike.ChildSA]espPair // inbound installed at HASH(2), not yet up
	current  *ike.ChildSA
	ikeUp    bool
	childUp  bool
	failErr  *Error
	since    time.Time

	ikeUpCh, childUpCh chan struct{}
	failCh             chan struct{} // closed on the first failure
	closeReq           chan struct{}
	stop               chan struct{} // ends the tick loop
	done               chan struct{}
	err                error
	closeOnce          sync.Once
	wg                 sync.WaitGroup
}

// Dial brings a client uplink up: IKE Main Mode and Quick Mode (UDP/1701
// selectors, RFC 3193 §5) to cfg.Gateway, the ESP SA pair installed in a
// userspace transport, an L2TP tunnel and session over it, and PPP until
// IPCP opens. A failure is an *Error naming the phase; everything started
// is torn down. Without a deadline on ctx the set-up is bounded by
// DefaultSetupTimeout.
func Dial(ctx context.Context, cfg ClientConfig) (*Tunnel, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	gw, err := resolveGateway(cfg.Gateway)
	if err != nil {
		return nil, &Error{PhaseTransport, err}
	}
	t := &Tunnel{
		cfg: cfg, gw: gw,
		log:       cfg.Logger.With("gateway", gw.String()),
		children:  map[uint32]*ike.ChildSA{},
		pending:   map[*ike.ChildSA]espPair{},
		ikeUpCh:   make(chan struct{}),
		childUpCh: make(chan struct{}),
		failCh:    make(chan struct{}),
		closeReq:  make(chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	t.stats = Stats{ESP: &t.esp, L2TP: &t.l2tp, PPP: &t.pppSt}
	t.SetPacketHandler(cfg.PacketHandler)
	icfg := ike.Config{
		Sender:   senderFunc(t.sendIKE),
		Clock:    cfg.Clock,
		Logger:   t.log.With("layer", "ike"),
		NATTPort: cfg.NATTPort,
		OnEvent:  t.onEvent,
		Cert:     cfg.Cert, CAs: cfg.CAs, RemoteID: cfg.RemoteID, LocalID: cfg.LocalID, Gateway: cfg.GatewayPolicy,
	}
	if cfg.PSK != nil {
		psk := cfg.PSK
		icfg.PSK = func(netip.Addr) ([]byte, bool) { return psk, true }
	}
	if kl := cfg.KeyLog; kl != nil {
		icfg.OnKeys = func(ic, _ [8]byte, key []byte) { _ = kl.LogIKEv1(ic, key) }
	}
	if err := cfg.IKEOptions.apply(&icfg); err != nil {
		return nil, err
	}
	if t.eng, err = ike.New(icfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	t.stats.IKE = t.eng.Stats()
	tcfg := esp.TransportConfig{
		IKEConn: cfg.IKEConn, NATTConn: cfg.NATTConn, IKE: t.ikeInput(), Clock: cfg.Clock,
		KeepaliveInterval: cfg.KeepaliveInterval, Logger: t.log.With("layer", "esp"),
		RekeyGrace: rekeyGrace,
	}
	if cfg.IKEConn == nil {
		tcfg.IKEAddr = cfg.LocalIKE
	}
	if cfg.NATTConn == nil {
		tcfg.NATTAddr = cfg.LocalNATT
	}
	if t.tr, err = esp.NewTransport(tcfg); err != nil {
		return nil, &Error{PhaseTransport, err}
	}
	t.stats.Transport = t.tr.Stats()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		tickLoop(cfg.Clock, t.eng, t.stop, t.noteTraffic)
	}()

	if err := t.setup(ctx); err != nil {
		// setup's verdict wins over the first failure recorded: it
		// already prefers a lower layer's cause (failOr) and, for a
		// refused login, PPP's over the hang-up that followed it.
		t.fail(t.Phase(), err)
		t.mu.Lock()
		var te *Error
		if !errors.As(err, &te) {
			te = &Error{t.Phase(), err}
		}
		t.failErr = te
		t.mu.Unlock()
		t.teardown(false)
		return nil, t.err
	}
	t.wg.Add(1)
	go t.supervise()
	return t, nil
}

// setup walks the phases; any error is attributed to the current phase
// unless it already is an *Error.
func (t *Tunnel) setup(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultSetupTimeout)
		defer cancel()
	}
	// A lower-layer failure (IKE, ESP) cancels the upper layers' waits.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-t.failCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := func(ch <-chan struct{}, timer <-chan time.Time) error {
		select {
		case <-ch:
			return nil
		case <-t.failCh:
			return t.failErr
		case <-timer:
			return ErrSetupTimeout
		case <-ctx.Done():
			// A failure cancels ctx too (above), and select picks at
			// random among ready cases: the failure, not its echo.
			if cause := context.Cause(ctx); errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return t.failOr(fmt.Errorf("%w: %v", ErrSetupTimeout, cause))
			}
			return t.failOr(ctx.Err())
		}
	}

	t.setPhase(PhaseIKE)
	t.log.Debug("dialing", "local", t.tr.IKEAddr())
	if err := t.eng.Dial(t.tr.IKEAddr(), t.gw); err != nil {
		return err
	}
	if err := t.waitIKE(wait); err != nil {
		return err
	}
	t.setPhase(PhaseQuickMode)
	qm := t.cfg.Clock.NewTimer(t.cfg.QuickModeTimeout)
	err := wait(t.childUpCh, qm.C())
	qm.Stop()
	if err != nil {
		return err
	}

	// The gateway installed its inbound SA before it sent HASH(2), so the
	// first SCCRQ may follow HASH(3) at once.
	t.setPhase(PhaseL2TP)
	t.ep = l2tp.NewEndpoint(t.tr.L2TP(),
		l2tp.Config{Role: l2tp.LAC, HostName: t.cfg.HostName, VendorName: L2TPVendorName, Clock: t.cfg.Clock, Logger: t.log.With("layer", "l2tp"), Stats: &t.l2tp})
	// L2TP straight from the ESP reader: no copy and hand-off per packet.
	ep := t.ep
	t.tr.SetL2TPHandler(func(b []byte, from *esp.Addr) { ep.Input(b, from) })
	t.mu.Lock()
	addr := t.peer.Addr(L2TPPort)
	t.mu.Unlock()
	if t.ltun, err = t.ep.Dial(ctx, addr); err != nil {
		return t.failOr(err)
	}
	if t.sess, err = t.ltun.OpenSession(ctx); err != nil {
		return t.failOr(err)
	}

	t.setPhase(PhasePPP)
	// Attach installs the frame handler before PPP's first frame (frames
	// the LNS sent earlier were held by the session) and takes the link
	// down when the L2TP session ends.
	t.ppp = ppp.Attach(t.sess, ppp.Config{
		Role: ppp.Client, MRU: t.cfg.MRU, Methods: t.cfg.AuthMethods,
		Username: t.cfg.Username, Password: t.cfg.Password,
		EchoInterval: t.cfg.EchoInterval, EchoFailures: t.cfg.EchoFailures, ProbeAfter: max(t.cfg.ProbeAfter, 0),
		IPv6: t.cfg.IPv6, IfaceID: t.cfg.IfaceID,
		Clock: t.cfg.Clock, Logger: t.log.With("layer", "ppp"), Stats: &t.pppSt,
		PacketHandler: t.deliver,
	})
	select {
	case <-t.ppp.Up():
	case <-t.ppp.Done():
		return t.pppFailure(ctx)
	case <-t.failCh:
		return t.pppFailure(ctx)
	case <-ctx.Done():
		return t.pppFailure(ctx)
	}
	info := t.ppp.Info()
	t.mu.Lock()
	t.since = t.cfg.Clock.Now()
	t.mu.Unlock()
	t.setPhase(PhaseUp)
	t.log.Info("tunnel established", "addr", info.Local, "peer", info.Peer, "suite", t.Status().Suite, "auth", info.Method)
	return nil
}

// pppFailure says why set-up ended while PPP negotiated. A server that
// refused our login sends its Failure packet, then closes the L2TP tunnel
// and deletes the IKE SA (and a failed set-up cancels ctx): PPP received
// the Failure first, so once it has handled what it queued, its verdict
// is the cause to report; a loaded machine otherwise reported "ipsec:
// peer deleted IPsec SA" for a wrong password, whichever of these woke
// the caller first.
func (t *Tunnel) pppFailure(ctx context.Context) error {
	perr := t.ppp.Flush(time.Second) // what PPP is ending with, nil if nothing
	if perr != nil && !errors.Is(perr, ppp.ErrLinkDown) {
		return &Error{t.pppPhase(perr), perr}
	}
	select {
	case <-t.failCh:
		return t.failErr
	default:
	}
	if perr != nil {
		// The LNS dropped the call during PPP negotiation (a server
		// whose PPP failed sends CDN): still a PPP-phase failure.
		return &Error{PhasePPP, fmt.Errorf("%w: %w", perr, t.sessErr())}
	}
	return t.failOr(fmt.Errorf("%w: %v", ErrSetupTimeout, ctx.Err()))
}

// failOr prefers the lower-layer failure that caused err, if any.
func (t *Tunnel) failOr(err error) error {
	select {
	case <-t.failCh:
		return t.failErr
	default:
		return err
	}
}

// pppPhase attributes a PPP failure to LCP, authentication or IPCP.
func (t *Tunnel) pppPhase(err error) Phase {
	switch {
	case errors.Is(err, ppp.ErrAuthFailed), errors.Is(err, ppp.ErrAuthRejected),
		errors.Is(err, ppp.ErrAuthTimeout), errors.Is(err, ppp.ErrBadServerAuth):
		return PhasePPPAuth
	case errors.Is(err, ppp.ErrLinkDown):
		return PhaseL2TP
	case t.Phase() == PhasePPP && t.pppSt.AuthSuccesses.Load() > 0:
		return PhaseIPCP
	}
	return PhasePPP
}

func (t *Tunnel) setPhase(p Phase) { t.phase.Store(uint32(p)) }

// Phase returns how far the tunnel got (PhaseUp once IPCP opened).
func (t *Tunnel) Phase() Phase { return Phase(t.phase.Load()) }

// fail records the first failure and wakes everything waiting on it.
func (t *Tunnel) fail(p Phase, err error) {
	var te *Error
	if !errors.As(err, &te) {
		te = &Error{p, err}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failErr != nil {
		return
	}
	t.failErr = te
	close(t.failCh)
}

// supervise waits for a failure in any layer, or Close, and tears down.
func (t *Tunnel) supervise() {
	defer t.wg.Done()
	graceful := false
	select {
	case <-t.failCh:
	case <-t.ppp.Done():
		if err := t.ppp.Err(); errors.Is(err, ppp.ErrLinkDown) {
			t.fail(PhaseL2TP, t.sessErr())
		} else {
			t.fail(t.pppPhase(err), err)
		}
	case <-t.sess.Done():
		t.fail(PhaseL2TP, t.sessErr())
	case <-t.ltun.Done():
		t.fail(PhaseL2TP, t.ltun.Err())
	case <-t.closeReq:
		graceful = true
	}
	go t.teardown(graceful)
}

func (t *Tunnel) sessErr() error {
	select {
	case <-t.sess.Done():
		if err := t.sess.Err(); err != nil {
			return err
		}
	default:
	}
	select {
	case <-t.ltun.Done():
		return t.ltun.Err()
	default:
	}
	return ppp.ErrLinkDown
}

// teardown stops every layer, top down. Gracefully (Close): PPP
// Terminate, CDN, StopCCN, each waiting for the peer's answer, then IKE
// Delete. Otherwise (failure): no waiting, the peer gets StopCCN and
// Delete if it still listens.
func (t *Tunnel) teardown(graceful bool) {
	if graceful {
		t.log.Debug("closing")
		t.fail(PhaseNone, ErrClosed) // lower layers going down now is no failure
		polite := make(chan struct{})
		go func() {
			_ = t.ppp.Close()
			_ = t.sess.Close()
			_ = t.ltun.Close()
			close(polite)
		}()
		// A dead peer would keep PPP and L2TP retransmitting for half a
		// minute; past CloseTimeout we stop asking.
		tm := t.cfg.Clock.NewTimer(CloseTimeout)
		select {
		case <-polite:
		case <-tm.C():
			t.log.Info("peer did not answer the close in time", "timeout", CloseTimeout)
			t.ppp.LowerDown()
			_ = t.ep.Close()
			<-polite
		}
		tm.Stop()
	} else if t.ppp != nil {
		t.ppp.LowerDown()
	}
	if t.ep != nil {
		_ = t.ep.Close()
	}
	t.eng.Close() // IKE Delete for the IPsec and ISAKMP SAs
	close(t.stop)
	_ = t.tr.Close()
	t.wg.Wait()
	t.mu.Lock()
	t.err = t.failErr
	since := t.since
	t.mu.Unlock()
	t.log.Info("tunnel closed", "duration", t.cfg.Clock.Now().Sub(since), "reason", t.err)
	close(t.done)
}

// Close tears the tunnel down gracefully (PPP Terminate, L2TP CDN and
// StopCCN, IKE Delete) and waits until it is gone. Err then reports
// ErrClosed unless a failure came first.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() { close(t.closeReq) })
	<-t.done
	return nil
}

// Done is closed when the tunnel has ended; Err says why.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Err returns the reason the tunnel ended (an *Error with the failing
// phase), or nil while it runs.
func (t *Tunnel) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// WritePacket sends one IPv4 packet to the gateway.
func (t *Tunnel) WritePacket(pkt []byte) error {
	err := t.write(t.ppp, pkt)
	if errors.Is(err, ppp.ErrNotOpen) || errors.Is(err, ppp.ErrClosed) {
		return fmt.Errorf("%w: %v", ErrNotUp, err)
	}
	return err
}

// WritePackets sends a burst of IP packets to the gateway as one batch:
// the ESP transport holds its sender around them, so they leave in full
// sendmmsg batches (runs to the gateway as UDP GSO messages) instead of one
// system call each. It stops at the first error and returns how many
// packets were sent.
func (t *Tunnel) WritePackets(pkts [][]byte) (int, error) {
	t.tr.Hold()
	defer t.tr.Release()
	for i, p := range pkts {
		if err := t.WritePacket(p); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

// SetPacketHandler sets the function receiving IPv4 packets from the
// gateway. The slice is valid only during the call, which runs on the
// receive path and must not block.
func (t *Tunnel) SetPacketHandler(fn func(pkt []byte)) {
	t.handler.set(fn)
}

// Info returns the negotiated PPP parameters: our address, the gateway's,
// DNS servers, MRUs, the authentication method.
func (t *Tunnel) Info() ppp.Info { return t.ppp.Info() }

// IPv6Up is closed when IPV6CP has opened (ClientConfig.IPv6 and a
// gateway that offers it); Info then carries the interface identifiers.
func (t *Tunnel) IPv6Up() <-chan struct{} { return t.ppp.IPv6Up() }

// LocalAddr returns our IPCP address.
func (t *Tunnel) LocalAddr() netip.Addr { return t.ppp.Info().Local }

// DNS returns the DNS servers IPCP gave us (RFC 1877); unset ones are zero.
func (t *Tunnel) DNS() [2]netip.Addr { return t.ppp.Info().DNS }

// MTU returns the largest IPv4 packet the gateway accepts (its MRU).
func (t *Tunnel) MTU() int { return t.ppp.Info().PeerMRU }

func (t *Tunnel) sendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	return t.tr.SendIKE(b, local, remote, natt)
}

// noteTraffic tells IKE that ESP carried data since the last tick (the
// ESP peer's received mark, as the server's tick reads its peers').
func (t *Tunnel) noteTraffic() {
	t.mu.Lock()
	p := t.peer
	t.mu.Unlock()
	if p != nil && p.TakeReceived() {
		t.eng.NoteTraffic(t.gw.Addr())
	}
}

// PeerCertificate is the certificate the gateway authenticated with in
// the last phase 1 (nil with a PSK).
func (t *Tunnel) PeerCertificate() *x509.Certificate { return t.peerCert.Load() }

// Stats returns the layers' counters.
func (t *Tunnel) Stats() *Stats { return &t.stats }

// Status returns a snapshot of the tunnel's state.
func (t *Tunnel) Status() Status {
	s := Status{Phase: t.Phase(), Gateway: t.gw,
		PacketsIn: t.in.Packets.Load(), BytesIn: t.in.Bytes.Load(),
		PacketsOut: t.out.Packets.Load(), BytesOut: t.out.Bytes.Load(), Err: t.Err()}
	t.mu.Lock()
	if c := t.current; c != nil {
		s.Suite, s.InSPI, s.OutSPI, s.Outer = c.Suite.String(), c.InSPI, c.OutSPI, c.Remote
	}
	if t.peer != nil {
		s.Outer = t.peer.Remote()
	}
	s.Since = t.since
	t.mu.Unlock()
	if s.Phase == PhaseUp || s.Err != nil {
		if t.ppp != nil {
			info := t.ppp.Info()
			s.Local, s.Peer, s.DNS, s.Username, s.Auth = info.Local, info.Peer, info.DNS, info.Username, info.Method.String()
			if info.IPv6 {
				s.IPv6, s.LinkLocal6 = true, info.LocalID.LinkLocal()
			}
		}
		if t.ltun != nil {
			s.L2TPTunnel, s.L2TPSession = t.ltun.LocalID(), t.sess.LocalID()
		}
	}
	return s
}

// DialL2TP opens one more L2TP tunnel, without a session, over the
// tunnel's IPsec SA. Stock clients use one tunnel; this exists so tests
// can play a peer that hoards tunnels (the server caps them per peer).
func (t *Tunnel) DialL2TP(ctx context.Context) (*l2tp.Tunnel, error) {
	t.mu.Lock()
	addr := t.peer.Addr(L2TPPort)
	t.mu.Unlock()
	return t.ep.Dial(ctx, addr)
}
