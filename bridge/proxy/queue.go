package proxy

// The second intake, central → device: requests that waited for a
// sleeping device (handleDown queued them, bounded by QueueLen and
// QueueTTL). flush sends them through the same device stages as
// handleDown (toDevice) when the device wakes; Tick answers the expired
// ones 5.04. Their answers go out through writeAnswer like any other.

import (
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// flush delivers an endpoint's queued requests (the device is awake).
func (p *Proxy) flush(name string) {
	p.mu.Lock()
	e := p.eps[name]
	p.mu.Unlock()
	if e == nil {
		return
	}
	p.flushEndpoint(e)
}

// flushEndpoint is flush for an endpoint's state at hand (HandleDevice
// calls it on every device request: no proxy-wide lock).
func (p *Proxy) flushEndpoint(e *endpointState) {
	e.mu.Lock()
	q := e.queue
	e.queue = nil
	e.mu.Unlock()
	if len(q) == 0 {
		return
	}
	// One goroutine relays the queue in order, one exchange at a time (the
	// queue is bounded by QueueLen; it takes no NStart slot so that a
	// device that wakes gets what waited for it, never a 5.03).
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for _, it := range q {
			it.msg.SetType(message.NonConfirmable) // the empty ACK was sent already
			p.writeAnswer(e, it.msg, it.from, p.toDevice(e, it.msg, it.from))
		}
	}()
}

// Tick answers queued requests older than QueueTTL with 5.04 Gateway
// Timeout. The daemon calls it every second; tests pass their own time.
func (p *Proxy) Tick(now time.Time) {
	p.mu.Lock()
	eps := make([]*endpointState, 0, len(p.eps))
	for _, e := range p.eps {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		e.mu.Lock()
		var keep, expired []queued
		for _, it := range e.queue {
			if now.After(it.deadline) {
				expired = append(expired, it)
			} else {
				keep = append(keep, it)
			}
		}
		e.queue = keep
		e.mu.Unlock()
		e.expireBlocks(now)
		for _, it := range expired {
			p.Stats.Expired.Add(1)
			it.msg.SetType(message.NonConfirmable)
			p.writeAnswer(e, it.msg, it.from, codeAnswer(codes.GatewayTimeout))
		}
	}
}
