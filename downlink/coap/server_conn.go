package coap

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// pskFor is pion's PSK callback: on the server, hint is the identity the
// client sent in its ClientKeyExchange (RFC 4279 section 2).
func (s *Server) pskFor(identity []byte) ([]byte, error) {
	key, ok := s.cfg.Registry.PSK(string(identity))
	if !ok {
		s.Stats.UnknownIdentity.Add(1)
		s.warnf("unknown PSK identity", "identity", truncate(string(identity)))
		return nil, ErrUnknownIdentity
	}
	return key, nil
}

// monitor sees every message before go-coap routes it: a token-less RST
// for a NON the bridge sent (an observe notification) would otherwise end
// in go-coap's block-wise layer unseen. Nothing is dropped here.
func (s *Server) monitor(cc *udpclient.Conn, r *pool.Message) (bool, error) {
	if r.Type() != message.Reset || s.cfg.OnReset == nil {
		return false, nil
	}
	c, ok := cc.NetConn().(*conn)
	if !ok {
		return false, nil
	}
	if sess := s.Session(c.ep.Name); sess != nil && sess.Conn == cc {
		s.cfg.OnReset(sess, r.MessageID())
	}
	return false, nil
}

// authenticate maps a completed handshake to its endpoint.
func (s *Server) authenticate(st dtls.State) (registry.Endpoint, error) {
	var (
		ep registry.Endpoint
		ok bool
	)
	switch {
	case len(st.IdentityHint) > 0:
		ep, ok = s.cfg.Registry.ByPSKIdentity(string(st.IdentityHint))
		if !ok {
			return ep, ErrUnknownIdentity
		}
	case len(st.PeerCertificates) > 0 && s.cfg.ClientCAs != nil:
		// pion verified the chain against ClientCAs (VerifyClientCertIfGiven).
		c, err := x509.ParseCertificate(st.PeerCertificates[0])
		if err != nil {
			return ep, fmt.Errorf("coap: client certificate: %w", err)
		}
		// Only the certificate recorded for the endpoint (its serial), not
		// any other of the site CA with the same CN, and not one on the
		// site CRL.
		ep, err = s.cfg.Registry.ByCert(c)
		if errors.Is(err, registry.ErrCertReplaced) || errors.Is(err, registry.ErrCertRevoked) {
			s.Stats.CertRefused.Add(1)
			return ep, fmt.Errorf("%w: %v", ErrCertRefused, err)
		}
		if err != nil {
			return ep, fmt.Errorf("%w: %q", ErrUnknownCN, truncate(c.Subject.CommonName))
		}
	default:
		return ep, errors.New("coap: client sent neither PSK identity nor certificate")
	}
	if ep.Protocol != registry.CoAP {
		return ep, ErrWrongProtocol
	}
	return ep, nil
}

func (s *Server) onNewConn(cc *udpclient.Conn) {
	c, ok := cc.NetConn().(*conn)
	if !ok {
		_ = cc.Close()
		return
	}
	now := time.Now()
	sess := &Session{Endpoint: c.ep, Conn: cc, Suite: c.suite, srv: s, seq: c.seq, started: now}
	sess.lastSeen.Store(now.UnixNano())
	sess.lastActive.Store(now.UnixNano())
	sess.remote.Store(cc.RemoteAddr().String())
	if p := c.woke; p != nil {
		sess.started = p.started
		sess.lastSeen.Store(p.lastSeen)
		sess.BytesIn.Store(p.bytesIn)
		sess.BytesOut.Store(p.bytesOut)
		sess.rebinds.Store(p.rebinds)
		sess.remote.Store(p.raddr.String())
	}
	s.mu.Lock()
	if s.closing {
		// Close has swept the sessions already, or will not see this
		// one: tell the device now.
		s.mu.Unlock()
		endConn(cc)
		if p := c.woke; p != nil {
			close(p.ready) // no session: wake returns nil
		}
		return
	}
	// Close waits for this call: a session superseded here (and the
	// device's close_notify) is not left to race Close's shutdown of the
	// socket (TestCloseNotifiesDevices: the old session's close_notify was
	// written after the socket closed, ~1 run in 100).
	s.opening.Add(1)
	defer s.opening.Done()
	old, oldParked := s.sessions[c.ep.Name], s.parked[c.ep.Name]
	if old != nil && old.seq > sess.seq {
		// A later handshake of this endpoint got here first (go-coap
		// runs each new conn on its own goroutine): this one is the
		// stale session, not the other.
		s.mu.Unlock()
		s.Stats.Superseded.Add(1)
		s.log.Info("session superseded before it started", "endpoint", c.ep.Name, "peer", cc.RemoteAddr().String())
		endConn(cc)
		if p := c.woke; p != nil {
			close(p.ready) // no session: wake returns nil
		}
		return
	}
	s.sessions[c.ep.Name] = sess
	if oldParked != nil && oldParked != c.woke {
		delete(s.parked, c.ep.Name) // a new handshake replaces the parked session
	}
	s.mu.Unlock()
	if old != nil {
		endConn(old.Conn)
	}
	if oldParked != nil && oldParked != c.woke {
		s.guard.dropParked(oldParked)
	}
	if p := c.woke; p != nil {
		s.Stats.Resumed.Add(1)
		p.sess.Store(sess)
		close(p.ready)
		s.log.Debug("parked session resumed", "endpoint", c.ep.Name, "peer", cc.RemoteAddr().String())
	} else {
		// Debug, as the other per-device session events: a restart of a
		// 10,000-sensor site would log 20,000 lines (and format them: ~10 µs
		// of a ~150 µs handshake); Stats and the status page count them.
		s.log.Debug("session established", "endpoint", c.ep.Name, "peer", cc.RemoteAddr().String(), "suite", c.suite.String(), "addr", c.ep.Addr.String())
	}
	cc.AddOnClose(func() {
		s.mu.Lock()
		if s.sessions[c.ep.Name] == sess {
			delete(s.sessions, c.ep.Name)
		}
		s.mu.Unlock()
		if sess.parked.Load() {
			return // parked, not ended: no OnSession(false)
		}
		s.log.Debug("session closed", "endpoint", c.ep.Name, "duration", time.Since(sess.started).Round(time.Millisecond).String())
		if s.cfg.OnSession != nil {
			s.cfg.OnSession(sess, false)
		}
	})
	if s.cfg.OnSession != nil {
		s.cfg.OnSession(sess, true)
	}
}

func (s *Server) limiter(name string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limits[name]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
		s.limits[name] = l
	}
	return l
}

func (s *Server) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	c, ok := w.Conn().NetConn().(*conn)
	if !ok {
		return
	}
	sess := s.Session(c.ep.Name)
	if sess == nil || sess.Conn != w.Conn() {
		return
	}
	sess.touch()
	sess.inflight.Add(1)
	defer sess.inflight.Add(-1)
	if r.Type() == message.Reset { // seen by monitor
		return
	}
	if c := r.Code(); c == codes.Empty || c>>5 != 0 {
		// A response no exchange waits for (e.g. a notification for an
		// observation already cancelled): not a request to serve.
		return
	}
	s.Stats.Requests.Add(1)
	sess.BytesIn.Add(uint64(len(r.Token()) + bodyLen(r) + 4))
	if s.cfg.Rate > 0 && !s.limiter(c.ep.Name).Allow() {
		s.Stats.RateLimited.Add(1)
		s.warnf("endpoint rate limited", "endpoint", c.ep.Name)
		_ = w.SetResponse(codes.Code(157), 0, nil) // 4.29 Too Many Requests, RFC 8516
		return
	}
	if s.cfg.Handler == nil {
		_ = w.SetResponse(codes.NotFound, 0, nil)
		return
	}
	s.cfg.Handler(sess, w, r)
}

func bodyLen(r *pool.Message) int {
	if r.Body() == nil {
		return 0
	}
	n, err := r.BodySize()
	if err != nil {
		return 0
	}
	return int(n)
}

func hasECDSA(suites []dtls.CipherSuiteID) bool {
	for _, id := range suites {
		if id == dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 || id == dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
			return true
		}
	}
	return false
}
