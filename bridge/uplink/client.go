// Package uplink is the edge bridge's long-running uplink client: it keeps
// one tunnel (package tunnel: IKEv1/ESP → L2TP → PPP) to one of several
// gateways up, fails over between them, reconnects with capped exponential
// backoff and full jitter (so a fleet does not reconnect in lock-step after
// a gateway restart), and exposes one packet interface that stays the same
// across reconnects, so the bridge's IP stack is wired once.
package uplink

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// Gateway is one gateway to dial: its IKE address ("host:port" or "host")
// and NAT-T port (default 4500).
type Gateway struct {
	Addr     string
	NATTPort uint16
}

// Config configures a Client.
type Config struct {
	// Gateways in order of preference; at least one.
	Gateways []Gateway
	// Tunnel is the template for every attempt (credentials, proposals,
	// DPD, LCP echo, keepalives...); Gateway and NATTPort are set per
	// attempt. Its Clock and Logger default to the Client's.
	Tunnel l2tpipsec.ClientConfig
	// Dial makes one attempt (default l2tpipsec.Dial); tests replace it.
	Dial func(ctx context.Context, cfg l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error)
	// Resolve looks up a gateway given by name (default: the system
	// resolver, A and AAAA). Every address of a name is a gateway of its
	// own: see resolve.go.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)

	// MinBackoff and MaxBackoff bound the reconnect delay: attempt n waits
	// a uniformly random time in [0, min(MaxBackoff, MinBackoff·2^n))
	// ("full jitter"). Defaults 1 s and 2 min.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a tunnel must have been up for the backoff
	// to start again from MinBackoff (default 1 min).
	StableAfter time.Duration
	// Cooldown is how long a gateway that failed is passed over while
	// another one is healthy (default 1 min).
	Cooldown time.Duration
	// AttemptTimeout bounds one attempt (default l2tpipsec.DefaultSetupTimeout).
	AttemptTimeout time.Duration
	// AnswerTimeout: with several gateways, an attempt to a gateway that
	// has sent nothing for this long is given up so the next one is tried
	// (default DefaultAnswerTimeout; see failover.go). Negative: off.
	AnswerTimeout time.Duration
	// HappyEyeballsDelay: a gateway name with AAAA and A records is
	// dialled over IPv6 first and, when that has not answered after this
	// long, over IPv4 too; the first to answer wins (RFC 8305; dial.go).
	// Default DefaultHappyEyeballsDelay (250 ms).
	HappyEyeballsDelay time.Duration
	// NoIPv6 ignores AAAA records (an IPv4-only site).
	NoIPv6 bool

	// OnState is called on every state change, from the client's goroutine;
	// it must not block for long.
	OnState func(Status)

	// RequestRoutes asks the gateway for the routes it pushes to this
	// identity after every connect, with a DHCPINFORM over the PPP link as
	// Windows does (options 121/249 of the ACK; see routes.go).
	// Status.Routes holds the answer and OnRoutes is called with it; a
	// gateway that does not answer leaves Status.RoutesKnown false.
	RequestRoutes bool
	// OnRoutes is called with the pushed routes of each new tunnel (an
	// empty list: the gateway pushes none), from a client goroutine.
	OnRoutes func(routes []netip.Prefix)

	Clock  clock.Clock
	Logger *slog.Logger
	// Rand seeds the jitter (default: random).
	Rand *rand.Rand
}

// State is the client's connection state.
type State uint8

// States.
const (
	StateIdle       State = iota // not started
	StateConnecting              // an attempt is running
	StateUp                      // a tunnel is up
	StateBackoff                 // waiting before the next attempt
	StateStopped                 // Close was called
)

var stateNames = [...]string{"idle", "connecting", "up", "backoff", "stopped"}

// String names the state.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Status is a snapshot for logs and `bridge status`.
type Status struct {
	State   State
	Gateway string // gateway of the current or last attempt
	// Target is the address that attempt dialled (Gateway resolved).
	Target string
	// Addr is our IPCP address while up.
	Addr netip.Addr
	// LastErr is the last failure (an *l2tpipsec.Error naming the phase) and
	// LastPhase its phase; they survive a later success.
	LastErr   error
	LastPhase l2tpipsec.Phase
	// Since is when the state last changed; NextAttempt when the backoff
	// ends.
	Since, NextAttempt time.Time
	// Attempts, Failures and Connects count dial attempts, failed attempts
	// and established tunnels.
	Attempts, Failures, Connects uint64
	// Tunnel is the current tunnel's status (zero while down).
	Tunnel l2tpipsec.Status
	// Routes are the routes the gateway pushed for the current tunnel
	// (Config.RequestRoutes); RoutesKnown is false until it answered.
	// RouteErrors counts malformed DHCP replies.
	Routes      []netip.Prefix
	RoutesKnown bool
	RouteErrors uint64
}

// Client keeps an uplink up. Its methods are safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	cur     atomic.Pointer[l2tpipsec.Tunnel]
	handler atomic.Pointer[func([]byte)]
	inform  atomic.Pointer[informWait]

	mu       sync.Mutex
	st       Status
	health   []gwHealth
	attempts int // consecutive failures, for the backoff exponent
	rnd      *rand.Rand
	offset   int // this client's start in a DNS name's address list

	started   bool
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type gwHealth struct {
	downUntil time.Time
	failures  int
	// silent: its last attempt or tunnel ended without an answer from it;
	// endedBySelf: it ended our tunnel itself; answered: its last attempt
	// failed after an IKE answer from it (not a refusal); lost: our tunnel
	// through it went silent and it has not answered since (see failover.go).
	silent, endedBySelf, answered, lost bool
}

// New checks cfg and returns a client; Start begins connecting.
func New(cfg Config) (*Client, error) {
	if len(cfg.Gateways) == 0 {
		return nil, errors.New("uplink: no gateway configured")
	}
	if cfg.Dial == nil {
		cfg.Dial = l2tpipsec.Dial
	}
	if cfg.Resolve == nil {
		cfg.Resolve = defaultResolve
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = DefaultCooldown
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = l2tpipsec.DefaultSetupTimeout
	}
	if cfg.HappyEyeballsDelay <= 0 {
		cfg.HappyEyeballsDelay = DefaultHappyEyeballsDelay
	}
	if cfg.AnswerTimeout == 0 {
		cfg.AnswerTimeout = DefaultAnswerTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tunnel.Clock == nil {
		cfg.Tunnel.Clock = cfg.Clock
	}
	if cfg.Tunnel.Logger == nil {
		cfg.Tunnel.Logger = cfg.Logger
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "uplink"), health: make([]gwHealth, len(cfg.Gateways)),
		rnd: rnd, done: make(chan struct{})}
	c.offset = rnd.IntN(1 << 20)
	c.st.Since = cfg.Clock.Now()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start begins connecting in the background.
func (c *Client) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	go c.run()
}

// Close stops reconnecting and closes the current tunnel gracefully.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		if started {
			<-c.done
		}
		c.setState(StateStopped, "", nil)
	})
	return nil
}

// WritePacket sends an IPv4 packet through the current tunnel; ErrDown
// when there is none.
func (c *Client) WritePacket(pkt []byte) error {
	t := c.cur.Load()
	if t == nil {
		return ErrDown
	}
	if err := t.WritePacket(pkt); err != nil {
		if errors.Is(err, l2tpipsec.ErrNotUp) {
			return ErrDown
		}
		return err
	}
	return nil
}

// SetPacketHandler sets the function receiving IPv4 packets from the
// gateway, across reconnects. The slice is valid only during the call;
// it must not block.
func (c *Client) SetPacketHandler(fn func(pkt []byte)) {
	if fn == nil {
		c.handler.Store(nil)
		return
	}
	c.handler.Store(&fn)
}

func (c *Client) deliver(pkt []byte) {
	if c.deliverDHCP(pkt) {
		return
	}
	if h := c.handler.Load(); h != nil {
		(*h)(pkt)
	}
}

// LocalAddr returns our IPCP address while up (zero otherwise).
func (c *Client) LocalAddr() netip.Addr {
	if t := c.cur.Load(); t != nil {
		return t.LocalAddr()
	}
	return netip.Addr{}
}

// Tunnel returns the current tunnel, or nil while down.
func (c *Client) Tunnel() *l2tpipsec.Tunnel { return c.cur.Load() }

// Status returns a snapshot of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	s := c.st
	c.mu.Unlock()
	if t := c.cur.Load(); t != nil {
		s.Tunnel = t.Status()
		s.Addr = s.Tunnel.Local
	}
	return s
}

func (c *Client) setState(st State, gw string, err error) {
	c.mu.Lock()
	c.st.State = st
	c.st.Since = c.cfg.Clock.Now()
	if gw != "" {
		c.st.Gateway = gw
	}
	if err != nil {
		c.st.LastErr, c.st.LastPhase = err, l2tpipsec.PhaseOf(err)
	}
	s := c.st
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		if t := c.cur.Load(); t != nil {
			s.Tunnel = t.Status()
			s.Addr = s.Tunnel.Local
		}
		c.cfg.OnState(s)
	}
}

// pick returns the gateway to try: the first of the best rank (see
// failover.go); among cooling ones, the one whose cooldown ends first.
func (c *Client) pick(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := 0
	for i, h := range c.health {
		b := c.health[best]
		if r, rb := h.rank(now), b.rank(now); r < rb || (r == rb && r >= 3 && h.downUntil.Before(b.downUntil)) {
			best = i
		}
	}
	return best
}

// backoff returns the full-jitter delay for the current failure count.
func (c *Client) backoff() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fullJitter(c.rnd, c.cfg.MinBackoff, c.cfg.MaxBackoff, c.attempts)
}

// fullJitter draws uniformly from [0, min(max, base·2^n)) (the "full
// jitter" of exponential backoff).
func fullJitter(r *rand.Rand, base, maxDelay time.Duration, n int) time.Duration {
	ceil := maxDelay
	if n < 30 && base<<n < maxDelay && base<<n > 0 {
		ceil = base << n
	}
	return time.Duration(r.Int64N(int64(ceil)) + 1)
}

// run is the client's one goroutine: attempt, hold the tunnel, back off.
func (c *Client) run() {
	defer close(c.done)
	for c.ctx.Err() == nil {
		now := c.cfg.Clock.Now()
		i := c.pick(now)
		gw := c.cfg.Gateways[i]
		// Count the attempt before announcing it, so that OnState's
		// Connecting snapshot names the attempt it starts.
		c.mu.Lock()
		c.st.Attempts++
		c.mu.Unlock()
		c.setState(StateConnecting, gw.Addr, nil)
		tcfg := c.cfg.Tunnel
		tcfg.NATTPort = gw.NATTPort
		if d := c.answerTimeout(i, now); d > 0 {
			tcfg.AnswerTimeout = d
		}
		var answered atomic.Bool
		prevAnswer := tcfg.OnAnswer
		tcfg.OnAnswer = func() {
			answered.Store(true)
			if prevAnswer != nil {
				prevAnswer()
			}
		}
		tcfg.PacketHandler = c.deliver
		var t *l2tpipsec.Tunnel
		var target string
		targets, err := c.targets(i)
		if err == nil {
			c.mu.Lock()
			c.st.Target = targets[0]
			c.mu.Unlock()
			t, target, err = c.dial(tcfg, targets)
			c.mu.Lock()
			c.st.Target = target
			c.mu.Unlock()
		}
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			// An IKE answer, however slow, shows a live gateway (an
			// overloaded survivor), not a silent one.
			ans, ref := answered.Load(), refused(err)
			sil := silent(err) && !ans
			c.mu.Lock()
			// The failure and its cause in one snapshot: Status() between
			// this and wait's setState saw Failures 1 with no LastErr
			// (TestHappyEyeballsBothDead, once in CI).
			c.st.Failures++
			c.st.LastErr, c.st.LastPhase = err, l2tpipsec.PhaseOf(err)
			if sil || ref {
				c.attempts++
			} else {
				c.attempts = 1 // it answered: a fresh answer resets the backoff
			}
			h := &c.health[i]
			h.failures++
			h.downUntil = c.cfg.Clock.Now().Add(c.cfg.Cooldown)
			h.silent, h.endedBySelf, h.answered, h.lost = sil, false, ans && !ref, h.lost && sil
			c.mu.Unlock()
			c.log.Warn("uplink attempt failed", "gateway", gw.Addr, "target", target, "phase", l2tpipsec.PhaseOf(err).String(), "err", err)
			c.wait(gw.Addr, err)
			continue
		}
		t.SetPacketHandler(c.deliver) // also for a Dial that ignored tcfg.PacketHandler
		c.cur.Store(t)
		up := c.cfg.Clock.Now()
		c.mu.Lock()
		c.st.Connects++
		c.health[i] = gwHealth{}
		c.mu.Unlock()
		c.log.Info("uplink up", "gateway", gw.Addr, "target", target, "addr", t.LocalAddr())
		c.setState(StateUp, gw.Addr, nil)
		routesDone := make(chan struct{})
		if c.cfg.RequestRoutes {
			go func() {
				defer close(routesDone)
				c.requestRoutes(t, gw.Addr)
			}()
		} else {
			close(routesDone)
		}
		select {
		case <-t.Done():
		case <-c.ctx.Done():
			_ = t.Close()
		}
		<-routesDone // ends with the tunnel
		c.cur.Store(nil)
		c.clearRoutes()
		if c.ctx.Err() != nil {
			return
		}
		err = t.Err()
		c.mu.Lock()
		switch {
		case c.cfg.Clock.Now().Sub(up) >= c.cfg.StableAfter:
			c.attempts = 0
		case endedByGateway(err):
			c.attempts = 1 // it answered: a fresh answer resets the backoff
		default:
			c.attempts++
		}
		c.health[i] = gwHealth{downUntil: c.cfg.Clock.Now().Add(c.cfg.Cooldown), silent: silent(err),
			endedBySelf: endedByGateway(err), lost: silent(err)}
		c.mu.Unlock()
		c.log.Warn("uplink down", "gateway", gw.Addr, "phase", l2tpipsec.PhaseOf(err).String(), "err", err, "uptime", c.cfg.Clock.Now().Sub(up))
		c.wait(gw.Addr, err)
	}
}

// wait sleeps the backoff (on the client's clock) unless closed.
func (c *Client) wait(gw string, err error) {
	d := c.backoff()
	c.mu.Lock()
	c.st.NextAttempt = c.cfg.Clock.Now().Add(d)
	c.mu.Unlock()
	c.setState(StateBackoff, gw, err)
	tm := c.cfg.Clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
	case <-c.ctx.Done():
	}
}
