package uplink

import (
	"context"
	"errors"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// Failover between gateways (issue 20): a gateway that sent nothing on its
// last attempt, or stopped answering DPD / LCP echo / L2TP, is "silent";
// one that ended our tunnel itself (LCP Terminate, CDN, StopCCN, IKE Delete: e.g. an
// operator's Disconnect-Request) is alive. pick prefers, in order:
//
//	0. a gateway not cooling down and not silent (config order);
//	1. a gateway that just ended a tunnel itself (it answered), even while
//	   cooling down, before any silent one;
//	2. a silent gateway whose cooldown is over;
//	3. the gateway whose cooldown ends first.
//
// With several gateways an attempt to a silent one gives up after
// AnswerTimeout without any IKE answer, instead of waiting out IKE's
// retransmissions (about a minute), and a fresh answer resets the backoff:
// an attempt the gateway answered (not refused) or a tunnel it ended
// itself is followed by a delay drawn from [0, 2·MinBackoff), while
// silent attempts and refusals grow it as before.

// silent reports whether err shows a gateway that does not answer.
func silent(err error) bool {
	return errors.Is(err, ike.ErrTimeout) || errors.Is(err, ike.ErrDeadPeer) || errors.Is(err, ppp.ErrEchoTimeout) ||
		errors.Is(err, l2tp.ErrTimeout) || (tunnel.PhaseOf(err) <= tunnel.PhaseIKE &&
		(errors.Is(err, tunnel.ErrSetupTimeout) || errors.Is(err, context.DeadlineExceeded)))
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
	return tunnel.PhaseOf(err) == tunnel.PhasePPPAuth || errors.Is(err, ike.ErrNotGateway) ||
		errors.Is(err, ppp.ErrAuthMethodRefused) || errors.As(err, &ne) || errors.Is(err, ike.ErrPeerNotify)
}

// rank orders gateways for pick (lower first); see above.
func (h gwHealth) rank(now time.Time) int {
	cooling := now.Before(h.downUntil)
	switch {
	case !cooling && !h.silent:
		return 0
	case h.endedBySelf:
		return 1
	case !cooling:
		return 2
	default:
		return 3
	}
}

// answerTimeout is the per-attempt AnswerTimeout: only when there is
// another gateway to try.
func (c *Client) answerTimeout() time.Duration {
	if len(c.cfg.Gateways) < 2 {
		return 0
	}
	return c.cfg.AnswerTimeout
}
