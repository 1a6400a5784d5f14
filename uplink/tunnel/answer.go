package tunnel

import (
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
)

// waitIKE waits for phase 1; with AnswerTimeout it gives up early when the
// gateway has sent nothing parseable by then (ike.ErrTimeout, PhaseIKE).
func (t *Tunnel) waitIKE(wait func(ch <-chan struct{}, timer <-chan time.Time) error) error {
	d := t.cfg.AnswerTimeout
	if d <= 0 {
		return wait(t.ikeUpCh, nil)
	}
	tm := t.cfg.Clock.NewTimer(d)
	err := wait(t.ikeUpCh, tm.C())
	tm.Stop()
	if err != ErrSetupTimeout { // the sentinel itself: our timer (a deadline is wrapped)
		return err
	}
	if t.answered() {
		return wait(t.ikeUpCh, nil)
	}
	return &Error{PhaseIKE, fmt.Errorf("%w: nothing from the gateway in %v", ike.ErrTimeout, d)}
}

// answered reports whether the gateway sent any IKE message that parsed
// and matched our SA.
func (t *Tunnel) answered() bool {
	s := t.eng.Stats()
	return s.Received.Load() > s.Malformed.Load()+s.Unmatched.Load()
}
