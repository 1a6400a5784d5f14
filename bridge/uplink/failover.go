package uplink

import (
	"context"
	"errors"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Failover between gateways (issue 20): a gateway that sent nothing on its
// last attempt, or stopped answering DPD / LCP echo / L2TP, is "silent";
// one that ended our tunnel itself (LCP Terminate, CDN, StopCCN, IKE Delete: e.g. an
// operator's Disconnect-Request) is alive, and so is one whose last attempt
// failed after it answered IKE at all, however slowly (an overloaded
// survivor: its answer came, the set-up did not finish in time). A gateway
// under which our tunnel went silent is "lost" until it answers again.
// pick prefers, in order:
//
//	0. a gateway not cooling down and not silent (config order);
//	1. a gateway that just ended a tunnel itself or answered our last
//	   attempt (not a refusal), even while cooling down, before any silent one;
//	2. a silent gateway whose cooldown is over;
//	3. a cooling gateway that was silent on a set-up attempt;
//	4. a cooling gateway that was lost (went silent under our tunnel):
//	   it is not retried before the others until its cooldown is over.
//
// Within 3 and 4, the one whose cooldown ends first. When a gateway dies,
// its edges therefore stay on the survivor even if the survivor, flooded
// by every edge of the dead one, is slow to answer, instead of spending
// AnswerTimeout on the dead gateway every other attempt (measured with
// 1,000 edges: half of their attempts went there).
//
// With several gateways an attempt to a silent one gives up after
// AnswerTimeout without any IKE answer, instead of waiting out IKE's
// retransmissions (about a minute), unless every other gateway is lost
// and cooling and this one is not lost itself: then there is nowhere
// better to go, and giving up would only restart the set-up at a busy
// gateway. A fresh answer resets the
// backoff: an attempt the gateway answered (not refused) or a tunnel it
// ended itself is followed by a delay drawn from [0, 2·MinBackoff), while
// silent attempts and refusals grow it as before.

// silent reports whether err shows a gateway that does not answer.
func silent(err error) bool {
	return errors.Is(err, ike.ErrTimeout) || errors.Is(err, ike.ErrDeadPeer) || errors.Is(err, ppp.ErrEchoTimeout) ||
		errors.Is(err, l2tp.ErrTimeout) || (l2tpipsec.PhaseOf(err) <= l2tpipsec.PhaseIKE &&
		(errors.Is(err, l2tpipsec.ErrSetupTimeout) || errors.Is(err, context.DeadlineExceeded)))
}

// endedByGateway reports whether the gateway itself ended the tunnel.
func endedByGateway(err error) bool {
	return errors.Is(err, ppp.ErrPeerTerminated) || errors.Is(err, l2tp.ErrPeerCDN) || errors.Is(err, l2tp.ErrPeerStop) ||
		errors.Is(err, ike.ErrPeerDeleted)
}

// refused reports an attempt the gateway answered with a refusal
// (authentication, identity, proposals): retrying soon would not help.
func refused(err error) bool {
	var ne *ike.NotifyError
	return l2tpipsec.PhaseOf(err) == l2tpipsec.PhasePPPAuth || errors.Is(err, ike.ErrNotGateway) ||
		errors.Is(err, ppp.ErrAuthMethodRefused) || errors.As(err, &ne) || errors.Is(err, ike.ErrPeerNotify)
}

// rank orders gateways for pick (lower first); see above.
func (h gwHealth) rank(now time.Time) int {
	cooling := now.Before(h.downUntil)
	switch {
	case !cooling && !h.silent:
		return 0
	case h.endedBySelf || h.answered:
		return 1
	case !cooling:
		return 2
	case !h.lost:
		return 3
	default:
		return 4
	}
}

// answerTimeout is the AnswerTimeout of an attempt to gateway i: only when
// gateway i was lost itself (going back to a gateway that died under us
// must not cost a whole set-up timeout) or there is another gateway to try
// that is not lost and cooling.
func (c *Client) answerTimeout(i int, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.health[i].lost {
		return c.cfg.AnswerTimeout
	}
	for k, h := range c.health {
		if k != i && h.rank(now) < 4 {
			return c.cfg.AnswerTimeout
		}
	}
	return 0
}
