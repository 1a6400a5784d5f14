package proxy

import (
	"bytes"
	"context"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

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

// downObs is a central observer of a device resource.
type downObs struct {
	e        *endpointState
	key      string
	req      *pool.Message // the central registration (token, type, MID)
	from     net.Addr
	sess     *coap.Session
	answered chan struct{} // closed once the first response is in firstAns
	firstOut chan struct{} // closed once the first answer was written (or never will be)
	outOnce  sync.Once

	mu       sync.Mutex
	obs      observation // guarded by mu
	seq      uint32      // guarded by mu
	first    bool        // guarded by mu: the first response arrived
	firstAns answer      // guarded by mu: the answer it makes
	closed   bool        // guarded by mu
	pendMID  int32       // guarded by mu: unacknowledged CON notification, -1 none
	pend     []byte      // guarded by mu
	tries    int         // guarded by mu
	timer    *time.Timer // guarded by mu
}

func (o *downObs) nextSeq() uint32 {
	o.seq = (o.seq + 1) & 0xFFFFFF
	return o.seq
}

// observeDown registers a central observer (msg has Observe:0) on the
// device's live session and returns the answer to the registration (the
// device's first response with our Observe number, or an error). done is
// false when the endpoint's observation bound is reached: the intake then
// relays the request once as a plain GET (RFC 7641 section 4.1).
func (p *Proxy) observeDown(e *endpointState, msg *pool.Message, from net.Addr) (a answer, done bool) {
	s := p.session(e.ep.Name)
	if s == nil {
		return codeAnswer(codes.GatewayTimeout), true
	}
	key := from.String() + "|" + string(msg.Token())
	o := &downObs{e: e, key: key, req: msg, from: from, sess: s, answered: make(chan struct{}), firstOut: make(chan struct{}), pendMID: -1}
	old, replaced, full := admitObservation(e, e.down, key, o, p.cfg.MaxObservations)
	if replaced {
		p.endDown(old, true)
	}
	if full {
		p.Stats.ObserveRefused.Add(1)
		p.warnf("observation limit reached, answering once", "endpoint", e.ep.Name, "peer", from.String())
		return answer{}, false
	}
	p.Stats.Downstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	req := s.Conn.AcquireMessage(ctx)
	path, _ := msg.Path()
	copyRequest(req, msg, path, nil)
	req.SetObserve(0)
	if tok, err := message.GetToken(); err == nil {
		req.SetToken(tok)
	}
	obs, err := s.Conn.DoObserve(req, func(n *pool.Message) { p.downNotify(o, n) })
	s.Conn.ReleaseMessage(req)
	// The first response (an error code too) reaches the callback maybe
	// just after DoObserve returned: wait for it unless the exchange timed
	// out or the session ended.
	select {
	case <-o.answered:
	case <-ctx.Done():
	case <-s.Conn.Done():
	}
	o.mu.Lock()
	answered, first := o.first, o.firstAns
	o.mu.Unlock()
	a = codeAnswer(codes.GatewayTimeout)
	if answered {
		a = first
	}
	// Notifications after the first wait in downNotify until this answer
	// left (writeAnswer calls sent), so the observer sees them in order.
	a.sent = func() { o.outOnce.Do(func() { close(o.firstOut) }) }
	if err != nil {
		if !answered {
			p.warnf("device observe failed", "endpoint", e.ep.Name, "err", err.Error())
		}
		p.endDown(o, false)
		return a, true
	}
	o.mu.Lock()
	o.obs = obs
	closed := o.closed
	o.mu.Unlock()
	switch {
	case closed: // ended while registering (RST, session down)
		p.cancelObs(obs)
	case obs.Canceled(): // the device answered without Observe
		p.endDown(o, false)
	default:
		p.Stats.ObservationsDown.Add(1)
	}
	return a, true
}

// downNotify takes one response or notification from the device: the
// first becomes the registration's answer (observeDown returns it), the
// later ones are sent to the central observer as notifications.
func (p *Proxy) downNotify(o *downObs, n *pool.Message) {
	c := contentOf(n)
	final := c.final(n.HasOption(message.Observe))
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	first := !o.first
	seq := o.nextSeq()
	if first {
		o.first = true
		o.firstAns = answer{c: c, obs: seq, hasObs: !final}
	}
	o.mu.Unlock()
	if first {
		close(o.answered)
	} else {
		select { // the registration's answer goes out first
		case <-o.firstOut:
		case <-p.ctx.Done():
			return
		}
		var obs *uint32
		if !final {
			obs = &seq
		}
		p.notifyCentral(o, c, obs)
	}
	if final {
		p.endDown(o, false)
	}
}

// notifyCentral sends a notification to the central observer: CON with
// retransmission, a final one NON.
func (p *Proxy) notifyCentral(o *downObs, c content, obs *uint32) {
	p.Stats.NotificationsDown.Add(1)
	m := centralMsg{typ: message.Confirmable, mid: message.GetMID(), token: o.req.Token(), c: c}
	if obs == nil {
		m.typ = message.NonConfirmable
	} else {
		m.observe, m.hasObs = *obs, true
	}
	// Block 0 only: the observer fetches the rest with Block2 GETs served
	// from the cache (RFC 7959 section 2.6).
	e := o.e
	b := p.encodeBlocked(e, m, 0, false, resourceKey(o.from, o.req))
	if b == nil {
		return
	}
	e.write(b, o.from)
	if obs == nil {
		return
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	prev := o.pendMID
	o.pendMID, o.pend = m.mid, b
	if o.timer == nil {
		o.tries = 0
		o.timer = time.AfterFunc(p.cfg.ObserveAckTimeout, func() { p.retransmit(o) })
	}
	o.mu.Unlock()
	e.mu.Lock()
	if prev >= 0 && e.downMID[prev] == o {
		delete(e.downMID, prev)
	}
	e.downMID[m.mid] = o
	e.mu.Unlock()
}

// retransmit resends the pending CON notification, or drops an observer
// that did not acknowledge MAX_RETRANSMIT retransmissions.
func (p *Proxy) retransmit(o *downObs) {
	o.mu.Lock()
	if o.closed || o.pendMID < 0 {
		o.timer = nil
		o.mu.Unlock()
		return
	}
	if o.tries >= maxRetransmit {
		o.mu.Unlock()
		p.Stats.ObserveTimeouts.Add(1)
		p.warnf("central observer stopped acknowledging, observation dropped", "endpoint", o.e.ep.Name, "peer", o.from.String())
		p.endDown(o, true)
		return
	}
	o.tries++
	b := o.pend
	o.timer.Reset(p.cfg.ObserveAckTimeout << o.tries)
	o.mu.Unlock()
	o.e.write(b, o.from)
}

// downAck handles an empty ACK or RST from a central peer.
func (p *Proxy) downAck(e *endpointState, mid int32, reset bool) {
	e.mu.Lock()
	o := e.downMID[mid]
	delete(e.downMID, mid)
	e.mu.Unlock()
	if o == nil {
		return
	}
	if reset {
		p.Stats.ObserveCancelled.Add(1)
		p.endDown(o, true)
		return
	}
	o.mu.Lock()
	if o.pendMID == mid {
		o.pendMID, o.pend = -1, nil
		if o.timer != nil {
			o.timer.Stop()
			o.timer = nil
		}
	}
	o.mu.Unlock()
}

// cancelDown ends the central observation key (Observe:1).
func (p *Proxy) cancelDown(e *endpointState, from net.Addr, token message.Token) {
	e.mu.Lock()
	o := e.down[from.String()+"|"+string(token)]
	e.mu.Unlock()
	if o != nil {
		p.Stats.ObserveCancelled.Add(1)
		p.endDown(o, true)
	}
}

// endDown forgets a central observation, cancelling the device's if asked.
func (p *Proxy) endDown(o *downObs, cancelDevice bool) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	obs, mid := o.obs, o.pendMID
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	o.mu.Unlock()
	e := o.e
	e.mu.Lock()
	if e.down[o.key] == o {
		delete(e.down, o.key)
	}
	if mid >= 0 && e.downMID[mid] == o {
		delete(e.downMID, mid)
	}
	e.mu.Unlock()
	if cancelDevice && obs != nil {
		p.cancelObs(obs)
	}
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

func hasOpt(opts message.Options, id message.OptionID) bool {
	for _, o := range opts {
		if o.ID == id {
			return true
		}
	}
	return false
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
	if o != nil && o.sess == s {
		p.Stats.ObserveCancelled.Add(1)
		p.endUp(o, true)
	}
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
	e := o.e
	e.mu.Lock()
	if e.upObs[o.key] == o {
		delete(e.upObs, o.key)
	}
	if mid >= 0 && e.upMID[mid] == o {
		delete(e.upMID, mid)
	}
	e.mu.Unlock()
	if cancelUpstream && obs != nil {
		p.cancelObs(obs)
	}
}

// sessionDown ends the observations tied to a DTLS session that ended:
// central observers get a final 5.03, upstream ones are cancelled.
func (p *Proxy) sessionDown(s *coap.Session) {
	e := p.endpoint(s.Endpoint.Name)
	if e == nil {
		return
	}
	e.mu.Lock()
	var downs []*downObs
	var ups []*upObs
	for _, o := range e.down {
		if o.sess == s {
			downs = append(downs, o)
		}
	}
	for _, o := range e.upObs {
		if o.sess == s {
			ups = append(ups, o)
		}
	}
	e.mu.Unlock()
	for _, o := range downs {
		o.mu.Lock()
		answered := o.first
		o.mu.Unlock()
		p.endDown(o, false)
		if answered {
			p.notifyCentral(o, content{code: codes.ServiceUnavailable}, nil)
		}
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
	e.mu.Lock()
	var downs []*downObs
	var ups []*upObs
	for _, o := range e.down {
		downs = append(downs, o)
	}
	for _, o := range e.upObs {
		ups = append(ups, o)
	}
	e.mu.Unlock()
	for _, o := range downs {
		p.endDown(o, true)
		if tell {
			p.notifyCentral(o, content{code: codes.ServiceUnavailable}, nil)
		}
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
