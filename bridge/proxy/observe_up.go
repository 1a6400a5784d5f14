// Observe, device → central (see observe.go): a device's observation of a
// central resource, its NON notifications and cancellation.

package proxy

import (
	"bytes"
	"context"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/downlink/coap"
)

// upObs is a device's observation of a central resource.
type upObs struct {
	e     *endpointState
	key   string
	sess  *coap.Session
	token message.Token // the device's

	mu     sync.Mutex
	obs    observation // guarded by mu
	seq    uint32      // guarded by mu
	first  bool        // guarded by mu
	closed bool        // guarded by mu
	mid    int32       // guarded by mu: last NON notification, -1 none
}

// observeUp registers a device's observation upstream; false means it was
// not registered (over the bound) and the caller forwards a plain GET.
func (p *Proxy) observeUp(s *coap.Session, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, uc *udpclient.Conn, path string, query []string) bool {
	e := p.endpoint(s.Endpoint.Name)
	if e == nil {
		return false
	}
	key := string(r.Token())
	o := &upObs{e: e, key: key, sess: s, token: append(message.Token(nil), r.Token()...), mid: -1}
	old, replaced, full := admitObservation(e, e.upObs, key, o, p.cfg.MaxObservations)
	if replaced {
		p.endUp(old, true)
	}
	if full {
		p.Stats.ObserveRefused.Add(1)
		p.warnf("observation limit reached, answering once", "endpoint", e.ep.Name)
		return false
	}
	p.Stats.Upstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	firstc := make(chan content, 1)
	req := uc.AcquireMessage(ctx)
	copyRequest(req, r, path, query)
	req.SetObserve(0)
	if tok, err := message.GetToken(); err == nil {
		req.SetToken(tok)
	}
	obs, err := uc.DoObserve(req, func(n *pool.Message) {
		c := contentOf(n)
		final := c.final(n.HasOption(message.Observe))
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return
		}
		first := !o.first
		o.first = true
		seq := (o.seq + 1) & 0xFFFFFF
		o.seq = seq
		o.mu.Unlock()
		if first {
			if !final {
				c.opts = append(c.opts, message.Option{ID: message.Observe, Value: uintOpt(seq)})
			}
			firstc <- c
		} else {
			p.notifyDevice(o, c, seq, final)
		}
		if final {
			p.endUp(o, false)
		}
	})
	uc.ReleaseMessage(req)
	var c content
	select {
	case c = <-firstc:
	case <-ctx.Done():
		c = content{code: codes.GatewayTimeout}
	case <-uc.Done():
		c = content{code: codes.BadGateway}
	}
	if c.code == codes.GatewayTimeout || c.code == codes.BadGateway {
		p.Stats.UpstreamErrors.Add(1)
		if err != nil {
			p.warnf("upstream observe failed", "endpoint", e.ep.Name, "err", err.Error())
		}
	}
	if err != nil || c.final(hasOpt(c.opts, message.Observe)) {
		p.endUp(o, false)
	} else {
		o.mu.Lock()
		o.obs = obs
		closed := o.closed
		o.mu.Unlock()
		if closed {
			p.cancelObs(obs)
		} else {
			p.Stats.ObservationsUp.Add(1)
		}
	}
	writeContent(w, c)
	return true
}

// notifyDevice sends one notification to the device as NON.
func (p *Proxy) notifyDevice(o *upObs, c content, seq uint32, final bool) {
	cc := o.sess.Conn
	m := cc.AcquireMessage(p.ctx)
	defer cc.ReleaseMessage(m)
	m.SetToken(o.token)
	m.SetCode(c.code)
	m.SetType(message.NonConfirmable)
	mid := cc.GetMessageID()
	m.SetMessageID(mid)
	if c.hasCF {
		m.SetContentFormat(c.cf)
	}
	for _, opt := range c.opts {
		m.AddOptionBytes(opt.ID, opt.Value)
	}
	if !final {
		m.SetObserve(seq)
	}
	if len(c.body) > 0 {
		m.SetBody(bytes.NewReader(c.body))
	}
	o.mu.Lock()
	prev := o.mid
	o.mid = mid
	o.mu.Unlock()
	e := o.e
	e.mu.Lock()
	if prev >= 0 && e.upMID[prev] == o {
		delete(e.upMID, prev)
	}
	if !final {
		e.upMID[mid] = o
	}
	e.mu.Unlock()
	p.Stats.Notifications.Add(1)
	o.sess.BytesOut.Add(uint64(len(c.body) + 4))
	// Small notifications go straight to the session so that the MID a
	// device's RST names is the one recorded above; larger ones need
	// go-coap's block-wise layer, which assigns its own MIDs (an RST to
	// those is not matched; Observe:1 and the session's end still are).
	write := cc.WriteMessage
	if len(c.body) <= 1024 {
		write = cc.Session().WriteMessage
	}
	if err := write(m); err != nil {
		p.warnf("notification to device failed", "endpoint", e.ep.Name, "err", err.Error())
		p.endUp(o, true)
	}
}

// cancelUp ends the device observation with token (Observe:1).
func (p *Proxy) cancelUp(s *coap.Session, token message.Token) {
	e := p.endpoint(s.Endpoint.Name)
	if e == nil {
		return
	}
	e.mu.Lock()
	o := e.upObs[string(token)]
	e.mu.Unlock()
	p.cancelUpOf(s, o)
}

// OnReset is coap.Config.OnReset: a device rejected a notification.
func (p *Proxy) OnReset(s *coap.Session, mid int32) {
	e := p.endpoint(s.Endpoint.Name)
	if e == nil {
		return
	}
	e.mu.Lock()
	o := e.upMID[mid]
	e.mu.Unlock()
	p.cancelUpOf(s, o)
}

// cancelUpOf ends o, the device observation a cancellation (Observe:1 or
// RST) from session s named, if it is one and still belongs to s.
func (p *Proxy) cancelUpOf(s *coap.Session, o *upObs) {
	if o != nil && o.sess == s {
		p.Stats.ObserveCancelled.Add(1)
		p.endUp(o, true)
	}
}

func (p *Proxy) endUp(o *upObs, cancelUpstream bool) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	obs, mid := o.obs, o.mid
	o.mu.Unlock()
	forgetObs(p, o.e, o.e.upObs, o.e.upMID, o, o.key, mid, obs, cancelUpstream)
}
