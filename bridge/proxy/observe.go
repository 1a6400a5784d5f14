package proxy

import (
	"context"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/fleetgate/fleetgate/downlink/coap"
)

// Observe (RFC 7641) relayed both ways. Each side keeps its own token: the
// proxy registers its own observation on the far side (go-coap's client
// observe, which also acknowledges CON notifications and reassembles
// Block2 ones) and numbers the notifications it forwards with its own
// monotonic sequence.
//
//   - central → device (downObs): a GET with Observe:0 to the endpoint's
//     address observes the device over its DTLS session. Notifications go
//     to the central observer as CON messages, retransmitted (RFC 7252
//     section 4.2) and replaced by newer ones (RFC 7641 section 4.5.2); an
//     observer that never acknowledges, or answers RST, is dropped and the
//     device observation cancelled. Observe:1 cancels; the end of the DTLS
//     session ends the central observation with 5.03.
//   - device → central (upObs): a device's GET with Observe:0 (to central,
//     or Proxy-Uri) observes upstream; notifications go to the device as NON
//     (a sleepy device is not kept awake by acknowledgements); a device RST,
//     Observe:1 or the end of its DTLS session cancels upstream.
//
// Both are bounded per endpoint (Config.MaxObservations); over the bound a
// request is answered once without Observe, which tells the client it is
// not registered (RFC 7641 section 4.1).

// Defaults for the observe fields of Config.
const (
	DefaultMaxObservations   = 8
	DefaultObserveAckTimeout = 2 * time.Second // RFC 7252 ACK_TIMEOUT
	maxRetransmit            = 4               // RFC 7252 MAX_RETRANSMIT
)

// observation is what go-coap's DoObserve returns.
type observation interface {
	Cancel(ctx context.Context, opts ...message.Option) error
	Canceled() bool
}

// cancelObs deregisters an observation on the far side without blocking.
func (p *Proxy) cancelObs(obs observation) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
		defer cancel()
		_ = obs.Cancel(ctx)
	}()
}

func hasOpt(opts message.Options, id message.OptionID) bool {
	for _, o := range opts {
		if o.ID == id {
			return true
		}
	}
	return false
}

// sessionDown ends the observations tied to a DTLS session that ended:
// central observers get a final 5.03, upstream ones are cancelled.
func (p *Proxy) sessionDown(s *coap.Session) {
	e := p.endpoint(s.Endpoint.Name)
	if e == nil {
		return
	}
	downs, ups := e.observations(s)
	for _, o := range downs {
		p.finishDown(o, true, true, false)
	}
	for _, o := range ups {
		p.endUp(o, true)
	}
}

// Observations returns how many central → device and device → central
// observations an endpoint has.
func (p *Proxy) Observations(name string) (down, up int) {
	e := p.endpoint(name)
	if e == nil {
		return 0, 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.down), len(e.upObs)
}

// endObservations ends all of an endpoint's observations (endpoint removed
// or proxy closing): central observers get 5.03 (if told), upstream ones
// are cancelled.
func (p *Proxy) endObservations(e *endpointState, tell bool) {
	downs, ups := e.observations(nil)
	for _, o := range downs {
		p.finishDown(o, tell, false, true)
	}
	for _, o := range ups {
		p.endUp(o, true)
	}
}

// admitObservation files o under key in m, an observation table of e
// (guarded by e.mu): an older observation under the same key is taken out
// and returned (replaced) for the caller to end; a table already holding
// limit observations refuses o (full).
func admitObservation[T any](e *endpointState, m map[string]T, key string, o T, limit int) (old T, replaced, full bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, replaced = m[key]; replaced {
		delete(m, key)
	}
	if full = len(m) >= limit; !full {
		m[key] = o
	}
	return old, replaced, full
}

// observations returns e's central → device and device → central
// observations tied to DTLS session s, or all of them when s is nil.
func (e *endpointState) observations(s *coap.Session) (downs []*downObs, ups []*upObs) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range e.down {
		if s == nil || o.sess == s {
			downs = append(downs, o)
		}
	}
	for _, o := range e.upObs {
		if s == nil || o.sess == s {
			ups = append(ups, o)
		}
	}
	return downs, ups
}
