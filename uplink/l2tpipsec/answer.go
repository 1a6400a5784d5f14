package l2tpipsec

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"

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

// ikeInput is the IKE handler the transport feeds: the engine, wrapped to
// call ClientConfig.OnAnswer once after the gateway's first answer.
func (t *Tunnel) ikeInput() esp.IKEHandler {
	fn := t.cfg.OnAnswer
	if fn == nil {
		return t.eng
	}
	var fired atomic.Bool
	return esp.IKEHandlerFunc(func(b []byte, local, remote netip.AddrPort, natt bool) {
		t.eng.Input(b, local, remote, natt)
		if !fired.Load() && t.answered() && fired.CompareAndSwap(false, true) {
			fn()
		}
	})
}
