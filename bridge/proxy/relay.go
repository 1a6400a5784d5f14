package proxy

// The last stage central → device: a central request that the exchange
// stage admitted and that block.go / observe.go did not end goes over the
// device's DTLS session. relay returns the answer; the intake writes it
// (answer.go). It calls no other stage.

import (
	"context"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// relay sends one central request over the device's DTLS session and
// returns the answer for the central requester (5.04 when the device has
// no session or does not answer).
func (p *Proxy) relay(e *endpointState, msg *pool.Message) answer {
	s := p.session(e.ep.Name)
	if s == nil {
		return codeAnswer(codes.GatewayTimeout)
	}
	p.Stats.Downstream.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.RequestTimeout)
	defer cancel()
	req := s.Conn.AcquireMessage(ctx)
	defer s.Conn.ReleaseMessage(req)
	path, _ := msg.Path()
	copyRequest(req, msg, path, nil)
	tok, err := message.GetToken()
	if err == nil {
		req.SetToken(tok)
	}
	resp, err := s.Do(req)
	if err != nil {
		p.warnf("device request failed", "endpoint", e.ep.Name, "err", err.Error())
		return codeAnswer(codes.GatewayTimeout)
	}
	defer s.Conn.ReleaseMessage(resp)
	return responseAnswer(resp)
}

// hasBlock2Follow reports a Block2 request for a block after the first
// (a follow-up, never an observe registration; RFC 7959 section 2.6).
func hasBlock2Follow(m *pool.Message) bool {
	v, err := m.GetOptionUint32(message.Block2)
	return err == nil && v>>4 > 0
}

// isObserveRegistration reports a GET with Observe:0 (RFC 7641 section 3.1)
// that is not a Block2 follow-up.
func isObserveRegistration(m *pool.Message) bool {
	v, err := m.Observe()
	return err == nil && v == 0 && m.Code() == codes.GET && !hasBlock2Follow(m)
}

// isRequest reports a request code (class 0, not Empty; RFC 7252 section 12.1.1).
func isRequest(c codes.Code) bool { return c != codes.Empty && c>>5 == 0 }
