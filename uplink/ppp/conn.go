package ppp

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// FrameLink is the lower layer a Conn sends PPP frames on; l2tp.Session
// implements it. WriteFrame2 sends head then body as one frame.
type FrameLink interface {
	WriteFrame2(head, body []byte) error
}

// Conn is one PPP link in either role. Control frames are handled by one
// owner goroutine; IPv4 packets go straight between the lower layer and
// the packet handler.
type Conn struct {
	cfg  Config
	link FrameLink
	m    *machine // owned by run

	in      chan []byte // nil: a Flush marker
	results chan func()
	flushMu sync.Mutex
	flushed []chan error // Flush callers, in the order of their markers
	closeCh chan struct{}
	lowerCh chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	authWG  sync.WaitGroup

	// Data path state, published by the owner goroutine.
	ipOpen  atomic.Bool
	ip6Open atomic.Bool  // IPV6CP opened
	early   atomic.Int32 // IPv4 frames queued behind control frames
	peerMRU atomic.Int32
	handler atomic.Pointer[func([]byte)]
	info    atomic.Pointer[Info]
	// unanswered: unix nanos of the first IPv4 sent since the last frame
	// received (0: none); probeCh wakes the owner (probe.go).
	unanswered atomic.Int64
	probeCh    chan struct{}

	upCh      chan struct{}
	upOnce    sync.Once
	up6Ch     chan struct{}
	up6Once   sync.Once
	done      chan struct{}
	err       error
	closeOnce sync.Once
	lowerOnce sync.Once
}

// ipv4Header is the frame header of every IPv4 packet we send: FF 03 00 21.
// Shared and never written, so WritePacket does not allocate.
var ipv4Header = []byte{0xff, 0x03, 0x00, 0x21}

// ipv6Header is the frame header of every IPv6 packet: FF 03 00 57.
var ipv6Header = []byte{0xff, 0x03, 0x00, 0x57}

// New starts PPP negotiation over link at once (the lower layer is up).
// Feed received frames to Input; call LowerDown when the link goes away.
// Attach does both for an L2TP session.
func New(link FrameLink, cfg Config) *Conn {
	c := newConn(link, cfg)
	go c.run()
	return c
}

// Session is the lower layer Attach wires a Conn to; l2tp.Session
// implements it.
type Session interface {
	FrameLink
	SetFrameHandler(func(frame []byte))
	Done() <-chan struct{}
}

// Attach runs PPP over an established session: received frames go to the
// Conn (installed before the first frame is sent), and the Conn goes down
// when the session ends.
func Attach(s Session, cfg Config) *Conn {
	c := newConn(s, cfg)
	s.SetFrameHandler(c.Input)
	go c.run()
	go func() {
		select {
		case <-s.Done():
			c.LowerDown()
		case <-c.done:
		}
	}()
	return c
}

func newConn(link FrameLink, cfg Config) *Conn {
	cfg.setDefaults()
	c := &Conn{
		cfg: cfg, link: link,
		in: make(chan []byte, inboxLen), results: make(chan func(), 4),
		closeCh: make(chan struct{}), lowerCh: make(chan struct{}),
		upCh: make(chan struct{}), up6Ch: make(chan struct{}), done: make(chan struct{}),
	}
	if cfg.PacketHandler != nil {
		c.handler.Store(&cfg.PacketHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.m = newMachine(&c.cfg, c.sendControl, cfg.Clock.Now())
	c.probeCh = make(chan struct{}, 1)
	c.m.sentUnanswered = c.sentUnanswered
	c.m.onIP = func(open bool, mru int) {
		c.peerMRU.Store(int32(mru))
		c.ipOpen.Store(open)
	}
	c.m.onIPv4 = c.inputQueuedIPv4
	c.m.onIP6 = func(open bool, i Info) {
		c.ip6Open.Store(open)
		if cur := c.info.Load(); cur != nil { // IPCP's Info, with the IPv6 fields
			n := *cur
			n.IPv6, n.LocalID, n.PeerID = i.IPv6, i.LocalID, i.PeerID
			c.info.Store(&n)
		}
		if open {
			c.up6Once.Do(func() { close(c.up6Ch) })
		}
	}
	c.m.onUp = func(i Info) {
		c.info.Store(&i) // i carries IPv6 fields too if IPV6CP opened first
		c.upOnce.Do(func() { close(c.upCh) })
		if c.cfg.OnUp != nil {
			c.cfg.OnUp(i)
		}
	}
	c.m.startAuth = c.authAsync
	return c
}

func (c *Conn) sendControl(frame []byte) {
	if err := c.link.WriteFrame2(frame, nil); err != nil {
		c.m.log.Debug("send failed", "err", err)
	}
}

// authAsync runs the Authenticator off the owner goroutine; the verdict
// is posted back to it.
func (c *Conn) authAsync(req *AuthRequest) {
	c.authWG.Add(1)
	go func() {
		defer c.authWG.Done()
		res, asg, err := runAuth(c.ctx, &c.cfg, req)
		select {
		case c.results <- func() { c.m.authResult(res, asg, err) }:
		case <-c.ctx.Done():
		}
	}()
}

func (c *Conn) run() {
	clk := c.cfg.Clock
	timer := clk.NewTimer(time.Hour)
	defer timer.Stop()
	c.m.Start(clk.Now())
	closeCh := c.closeCh
	for c.m.phase != phaseDead {
		if d := c.m.NextDeadline(); !d.IsZero() {
			timer.Reset(max(d.Sub(clk.Now()), 0))
		} else {
			timer.Stop()
		}
		select {
		case f := <-c.in:
			if f == nil {
				c.answerFlush()
				continue
			}
			c.m.Input(clk.Now(), f)
		case fn := <-c.results:
			fn()
		case <-timer.C():
			c.m.Tick(clk.Now())
		case <-c.probeCh:
			c.m.armProbe()
		case <-closeCh:
			closeCh = nil // closed channels stay ready; handle once
			c.m.now = clk.Now()
			c.m.fail(ErrClosed)
		case <-c.lowerCh:
			// Frames that arrived before the lower layer went down
			// come first: a peer that refused our login sends its
			// Failure and then closes the session, and the Failure is
			// why the link ends.
			c.drainInput(clk.Now())
			c.m.LowerDown()
		}
	}
	c.cancel()
	c.authWG.Wait()
	c.err = c.m.err
	close(c.done)
	if c.cfg.OnDown != nil {
		c.cfg.OnDown(c.err)
	}
}

// Input takes one received PPP frame (the slice is only read during the
// call). IPv4 goes straight to the packet handler; control frames are
// copied to the owner goroutine. Safe to call from the lower layer's
// reader goroutine.
//
// An IPv4 frame that arrives while IPCP is not open yet is queued behind
// the control frames instead of dropped: the peer opens IPCP when it
// sends its last Configure-Ack and may send data at once, so its first
// packet can reach us before the owner goroutine has processed that Ack.
// Once one is queued, later IPv4 frames follow it through the queue until
// it drains, so order is kept and the handler never runs on two
// goroutines at once. At most maxEarlyIPv4 wait; more are dropped.
func (c *Conn) Input(frame []byte) {
	proto, info, err := ParseFrame(frame)
	if err != nil {
		c.cfg.Stats.MalformedDropped.Add(1)
		return
	}
	c.noteReceived()
	if proto == ProtoIPv6 && c.ip6Open.Load() {
		if h := c.handler.Load(); h != nil {
			c.cfg.Stats.PacketsIn6.Add(1)
			(*h)(info)
		} else {
			c.cfg.Stats.PacketsDropped.Add(1)
		}
		return
	}
	if proto == ProtoIPv4 {
		h := c.handler.Load()
		if h == nil {
			c.cfg.Stats.PacketsDropped.Add(1)
			return
		}
		if c.ipOpen.Load() && c.early.Load() == 0 {
			c.cfg.Stats.PacketsIn.Add(1)
			(*h)(info)
			return
		}
		if c.early.Add(1) > maxEarlyIPv4 {
			c.early.Add(-1)
			c.cfg.Stats.PacketsDropped.Add(1)
			return
		}
		select {
		case c.in <- append([]byte(nil), frame...):
			c.cfg.Stats.EarlyIPv4Queued.Add(1)
		default:
			c.early.Add(-1)
			c.cfg.Stats.InboxOverflow.Add(1)
		}
		return
	}
	select {
	case c.in <- append([]byte(nil), frame...):
	default:
		c.cfg.Stats.InboxOverflow.Add(1)
	}
}

// Flush waits until the owner goroutine has handled every frame Input
// queued before the call, and returns the error the link is ending with
// (nil while it is not ending). It gives up after timeout (real time: it
// bounds a hand-off between goroutines) or when the Conn is done, and
// then returns the error the Conn ended with, if any. A lower layer that
// learns its peer closed uses it to find out whether PPP, whose frames
// arrived first, already knows why: a gateway hangs up after a failed
// login, and the Failure packet is the cause to report, not the hang-up.
func (c *Conn) Flush(timeout time.Duration) error {
	ch := make(chan error, 1)
	c.flushMu.Lock()
	c.flushed = append(c.flushed, ch)
	c.flushMu.Unlock()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case c.in <- nil:
	case <-c.done:
		return c.err
	case <-tm.C:
		c.flushMu.Lock() // no marker was queued: forget the waiter
		c.flushed = slices.DeleteFunc(c.flushed, func(w chan error) bool { return w == ch })
		c.flushMu.Unlock()
		return nil
	}
	select {
	case err := <-ch:
		return err
	case <-c.done:
		return c.err
	case <-tm.C:
		return nil
	}
}

// drainInput handles the frames already queued (owner goroutine).
func (c *Conn) drainInput(now time.Time) {
	for {
		select {
		case f := <-c.in:
			if f == nil {
				c.answerFlush()
			} else if c.m.phase != phaseDead {
				c.m.Input(now, f)
			}
		default:
			return
		}
	}
}

// answerFlush answers the oldest Flush caller (owner goroutine).
func (c *Conn) answerFlush() {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	if len(c.flushed) == 0 {
		return
	}
	c.flushed[0] <- c.m.err
	c.flushed = c.flushed[1:]
}

// inputQueuedIPv4 runs on the owner goroutine for an IPv4 frame queued by
// Input, after every control frame received before it.
func (c *Conn) inputQueuedIPv4(info []byte, open bool) {
	defer c.early.Add(-1) // after delivery: the fast path waits for us
	h := c.handler.Load()
	if !open || h == nil {
		c.cfg.Stats.PacketsDropped.Add(1)
		return
	}
	c.cfg.Stats.PacketsIn.Add(1)
	(*h)(info)
}

// SetPacketHandler sets the function receiving IPv4 packets (and IPv6
// ones once IPV6CP opened: tell them apart by the version nibble). The slice is
// valid only during the call; it runs on the lower layer's reader
// goroutine and must not block.
func (c *Conn) SetPacketHandler(fn func(pkt []byte)) { c.handler.Store(&fn) }

// WritePacket sends one IPv4 packet, or an IPv6 one (version nibble 6)
// once IPV6CP opened. It does not allocate.
func (c *Conn) WritePacket(pkt []byte) error {
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return c.writeIPv6(pkt)
	}
	if !c.ipOpen.Load() {
		c.cfg.Stats.PacketsDropped.Add(1)
		return ErrNotOpen
	}
	if len(pkt) > int(c.peerMRU.Load()) {
		c.cfg.Stats.PacketsDropped.Add(1)
		return ErrTooBig
	}
	if err := c.link.WriteFrame2(ipv4Header, pkt); err != nil {
		return err
	}
	c.noteSent()
	c.cfg.Stats.PacketsOut.Add(1)
	return nil
}

func (c *Conn) writeIPv6(pkt []byte) error {
	if !c.ip6Open.Load() || !c.ipOpen.Load() {
		c.cfg.Stats.PacketsDropped.Add(1)
		return ErrNotOpen
	}
	if len(pkt) > int(c.peerMRU.Load()) {
		c.cfg.Stats.PacketsDropped.Add(1)
		return ErrTooBig
	}
	if err := c.link.WriteFrame2(ipv6Header, pkt); err != nil {
		return err
	}
	c.noteSent()
	c.cfg.Stats.PacketsOut6.Add(1)
	return nil
}

// IPv6Up is closed when IPV6CP has opened (never, on an IPv4-only link).
func (c *Conn) IPv6Up() <-chan struct{} { return c.up6Ch }

// Up is closed when IPCP has opened.
func (c *Conn) Up() <-chan struct{} { return c.upCh }

// Done is closed when the link has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns the reason the link ended (nil while it runs).
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Info returns the negotiated parameters (zero before IPCP opened).
func (c *Conn) Info() Info {
	if i := c.info.Load(); i != nil {
		return *i
	}
	return Info{}
}

// Close terminates the link with LCP Terminate-Request and waits until the
// peer acknowledged it or the restart counter ran out (RFC 1661 §3.7).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closeCh) })
	<-c.done
	return nil
}

// LowerDown tells the Conn the lower layer (the L2TP session) is gone; it
// ends at once without waiting for the peer.
func (c *Conn) LowerDown() {
	c.lowerOnce.Do(func() { close(c.lowerCh) })
}
