package uplink

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// Happy Eyeballs (RFC 8305) for a dual-stack gateway name. IKE runs over
// UDP, so "connected" means the gateway answered: the IPv6 target is
// dialled first; if it has not answered after HappyEyeballsDelay (RFC 8305
// §5's Connection Attempt Delay, 250 ms) or failed, the IPv4 target is
// dialled too; the first target whose gateway answers (l2tpipsec.ClientConfig
// OnAnswer: its first IKE message that parsed and matched our SA) wins and
// every other attempt is cancelled at once (an unanswered Main Mode leaves
// no state on our gateway: it answers MM1 statelessly). A dead AAAA (a
// blackhole, no route) therefore costs 250 ms, never IKE's retransmission
// timeouts.

// DefaultHappyEyeballsDelay is RFC 8305's recommended Connection Attempt
// Delay.
const DefaultHappyEyeballsDelay = 250 * time.Millisecond

type dialResult struct {
	k   int
	t   *l2tpipsec.Tunnel
	err error
}

// dial makes one attempt to the targets of one gateway and returns the
// tunnel and the target it reached, or the failure of the attempt that
// got furthest (the one the gateway answered, else the last to fail).
func (c *Client) dial(tcfg l2tpipsec.ClientConfig, targets []string) (*l2tpipsec.Tunnel, string, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.AttemptTimeout)
	defer cancel()
	if len(targets) == 1 {
		tcfg.Gateway = targets[0]
		t, err := c.cfg.Dial(ctx, tcfg)
		return t, targets[0], err
	}
	results := make(chan dialResult, len(targets))
	answered := make(chan int, len(targets))
	cancels := make([]context.CancelFunc, 0, len(targets))
	start := func(k int) {
		actx, acancel := context.WithCancel(ctx)
		cancels = append(cancels, acancel)
		cfg := tcfg
		cfg.Gateway = targets[k]
		cfg.LocalIKE, cfg.LocalNATT = localFor(targets[k], cfg.LocalIKE), localFor(targets[k], cfg.LocalNATT)
		var once sync.Once
		prev := cfg.OnAnswer
		cfg.OnAnswer = func() {
			once.Do(func() { answered <- k })
			if prev != nil {
				prev()
			}
		}
		c.log.Debug("uplink happy eyeballs attempt", "target", targets[k])
		go func() {
			t, err := c.cfg.Dial(actx, cfg)
			results <- dialResult{k, t, err}
		}()
	}
	cancelOthers := func(winner int) {
		for k, cf := range cancels {
			if k != winner {
				cf()
			}
		}
	}
	delay := c.cfg.HappyEyeballsDelay
	tm := c.cfg.Clock.NewTimer(delay)
	defer tm.Stop()
	start(0)
	running, winner := 1, -1
	var won *l2tpipsec.Tunnel
	var lastErr error
	lastK := 0
	for running > 0 {
		select {
		case <-tm.C():
			if winner < 0 && len(cancels) < len(targets) {
				start(len(cancels))
				running++
				tm.Reset(delay)
			}
		case k := <-answered:
			if winner < 0 {
				winner = k
				cancelOthers(k)
			}
		case r := <-results:
			running--
			switch {
			case r.err == nil && won == nil && (winner < 0 || winner == r.k):
				won, winner = r.t, r.k
				cancelOthers(r.k)
			case r.err == nil:
				_ = r.t.Close() // lost the race after all
			case winner < 0 || winner == r.k:
				lastErr, lastK = r.err, r.k
				if winner < 0 && len(cancels) < len(targets) {
					// RFC 8305 §5: a failed attempt starts the next at once.
					start(len(cancels))
					running++
					tm.Reset(delay)
				}
			}
		}
	}
	for _, cf := range cancels {
		cf()
	}
	if won != nil {
		return won, targets[winner], nil
	}
	return nil, targets[lastK], lastErr
}

// localFor keeps a configured local address, but turns the default
// wildcard "0.0.0.0:0" into "[::]:0" for an IPv6 target (on Linux the
// former is already a dual-stack socket; elsewhere it may not be).
func localFor(target, local string) string {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().Is6() {
		return local
	}
	if l, err := netip.ParseAddrPort(local); err == nil && l.Addr() == netip.IPv4Unspecified() {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), l.Port()).String()
	}
	return local
}
