package device

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// Resources the device serves on its own DTLS session (RFC 6690 links).
const (
	// PathTemp is the temperature resource (GET, observe).
	PathTemp = "/sensors/temp"
	// PathHumidity is the humidity resource (GET, observe).
	PathHumidity = "/sensors/humidity"
	// PathCore is the RFC 6690 resource directory.
	PathCore  = "/.well-known/core"
	coreLinks = `</sensors/temp>;rt="temperature-c";obs;ct=110,</sensors/humidity>;rt="humidity";obs;ct=110`
)

// suites returns the DTLS cipher suite for the device's auth and suite
// choice: RFC 6655 (CCM_8) and RFC 5487/5289 (GCM) for PSK, RFC 7251 for
// ECDHE-ECDSA.
func suites(kind creds.Kind, suite string) []piondtls.CipherSuiteID {
	switch {
	case kind == creds.KindCert && suite == "gcm":
		return []piondtls.CipherSuiteID{piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	case kind == creds.KindCert:
		return []piondtls.CipherSuiteID{piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}
	case suite == "gcm":
		return []piondtls.CipherSuiteID{piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256}
	default:
		return []piondtls.CipherSuiteID{piondtls.TLS_PSK_WITH_AES_128_CCM_8}
	}
}

type observer struct {
	conn  mux.Conn
	token message.Token
	path  string
}

type coapSession struct {
	d    *Device
	fc   *FaultConn
	dc   *piondtls.Conn
	cc   *udpclient.Conn
	once sync.Once

	mu        sync.Mutex // guards observers and obsSeq
	observers map[string]observer
	obsSeq    uint32
}

func (d *Device) dtlsOptions() []piondtls.ClientOption {
	e := d.cfg.Creds
	opts := []piondtls.ClientOption{
		piondtls.WithCipherSuites(suites(e.Kind, d.cfg.Suite)...),
		piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret),
		piondtls.WithFlightInterval(time.Second),
	}
	if e.Kind == creds.KindCert {
		opts = append(opts,
			piondtls.WithCertificates(*e.Cert),
			piondtls.WithRootCAs(d.cfg.RootCAs),
			piondtls.WithServerName(d.cfg.ServerName),
			piondtls.WithInsecureSkipVerify(d.cfg.InsecureSkipVerify))
	} else {
		secret := e.Secret
		opts = append(opts,
			piondtls.WithPSK(func([]byte) ([]byte, error) { return secret, nil }),
			piondtls.WithPSKIdentityHint([]byte(e.Identity)))
	}
	if d.cfg.CID {
		// Ask the server for a CID and send it on every record, so that the
		// session survives a NAT rebinding (RFC 9146 §3); we need none.
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()))
	}
	return opts
}

func (d *Device) dialCoAP(ctx context.Context) (session, error) {
	raddr, err := net.ResolveUDPAddr("udp", d.cfg.Target)
	if err != nil {
		return nil, err
	}
	fc, err := listenFault(d.cfg.Listen, d.cfg.BindIP, d.cfg.LossPercent, d.rng.Uint64(), &d.Stats)
	if err != nil {
		return nil, err
	}
	dc, err := piondtls.ClientWithOptions(fc, raddr, d.dtlsOptions()...)
	if err != nil {
		fc.Close()
		return nil, fmt.Errorf("dtls: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	if err := dc.HandshakeContext(hctx); err != nil {
		dc.Close()
		fc.Close()
		return nil, fmt.Errorf("dtls handshake: %w", err)
	}
	s := &coapSession{d: d, fc: fc, dc: dc, observers: map[string]observer{}}
	tick := max(d.cfg.AckTimeout/8, 20*time.Millisecond)
	s.cc = coapdtls.Client(dc,
		options.WithMux(s.router()),
		options.WithTransmission(1, d.cfg.AckTimeout, d.cfg.MaxRetransmit),
		// go-coap checks retransmissions from this runner; its default
		// 4 s period is far coarser than ACK_TIMEOUT.
		options.WithPeriodicRunner(func(f func(time.Time) bool) {
			go func() {
				for f(time.Now()) {
					time.Sleep(tick)
				}
			}()
		}),
		options.WithErrors(func(err error) { d.log.Debug("coap", "err", err) }),
	)
	return s, nil
}

func (s *coapSession) router() *mux.Router {
	r := mux.NewRouter()
	_ = r.Handle(PathTemp, mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) { s.serve(w, m, "temp") }))
	_ = r.Handle(PathHumidity, mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) { s.serve(w, m, "humidity") }))
	_ = r.Handle(PathCore, mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		s.d.Stats.Served.Add(1)
		_ = w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader([]byte(coreLinks)))
	}))
	return r
}

// reading returns a one-measurement SenML pack of the latest value.
func (s *coapSession) reading(name string) ([]byte, error) {
	t := s.d.Latest()
	t.Device = s.d.cfg.Name
	var keep []senml.Measurement
	for _, m := range t.Values {
		if m.Name == name {
			keep = append(keep, m)
		}
	}
	t.Values = keep
	if t.Time.IsZero() {
		t.Time = time.Now() // no telemetry sent yet
	}
	return senml.Encode(readingPack(t), s.d.cfg.Format)
}

// readingPack is the resource representation: the measurement alone,
// with the device base name (no seq record: GETs are not telemetry).
func readingPack(t senml.Telemetry) senml.Pack {
	p := senml.Pack{}
	for i, m := range t.Values {
		v := m.Value
		r := senml.Record{Name: m.Name, Unit: m.Unit, Value: &v}
		if i == 0 {
			r.BaseName = t.Device + "/"
			r.BaseTime = float64(t.Time.UnixMilli()) / 1000
		}
		p = append(p, r)
	}
	if len(p) == 0 {
		zero := 0.0
		p = append(p, senml.Record{BaseName: t.Device + "/", Name: "none", Value: &zero})
	}
	return p
}

// serve answers GET (RFC 7252 §5.8.1) and observe registration and
// deregistration (RFC 7641 §3.1, §3.6).
func (s *coapSession) serve(w mux.ResponseWriter, m *mux.Message, name string) {
	s.d.Stats.Served.Add(1)
	if m.Code() != codes.GET {
		_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
		return
	}
	body, err := s.reading(name)
	if err != nil {
		_ = w.SetResponse(codes.InternalServerError, message.TextPlain, nil)
		return
	}
	path, _ := m.Path()
	key := path + "|" + m.Token().String()
	var opts []message.Option
	if obs, err := m.Observe(); err == nil {
		s.mu.Lock()
		switch obs {
		case 0:
			s.observers[key] = observer{conn: w.Conn(), token: append(message.Token(nil), m.Token()...), path: name}
			s.obsSeq++
			var buf [4]byte
			n, _ := message.EncodeUint32(buf[:], s.obsSeq)
			opts = append(opts, message.Option{ID: message.Observe, Value: buf[:n]})
		case 1:
			delete(s.observers, key)
		}
		s.mu.Unlock()
	}
	_ = w.SetResponse(codes.Content, message.MediaType(s.d.cfg.Format.ContentFormat()), bytes.NewReader(body), opts...)
}

// notify sends a NON notification with a fresh observe number to every
// observer (RFC 7641 §4.2, §4.4).
func (s *coapSession) notify(senml.Telemetry) {
	s.mu.Lock()
	obs := make([]observer, 0, len(s.observers))
	for _, o := range s.observers {
		obs = append(obs, o)
	}
	s.obsSeq++
	seq := s.obsSeq
	s.mu.Unlock()
	for _, o := range obs {
		body, err := s.reading(o.path)
		if err != nil {
			continue
		}
		msg := o.conn.AcquireMessage(s.cc.Context())
		msg.SetCode(codes.Content)
		msg.SetToken(o.token)
		msg.SetType(message.NonConfirmable)
		msg.SetObserve(seq)
		msg.SetContentFormat(message.MediaType(s.d.cfg.Format.ContentFormat()))
		msg.SetBody(bytes.NewReader(body))
		if err := o.conn.WriteMessage(msg); err == nil {
			s.d.Stats.Notifications.Add(1)
		}
		o.conn.ReleaseMessage(msg)
	}
}

func (s *coapSession) send(ctx context.Context, _ senml.Telemetry, payload []byte) (bool, bool, error) {
	rctx, cancel := context.WithTimeout(ctx, s.d.maxTransmitWait()+s.d.cfg.AckTimeout)
	defer cancel()
	newReq := s.cc.NewPostRequest
	if s.d.cfg.PUT {
		newReq = s.cc.NewPutRequest
	}
	req, err := newReq(rctx, s.d.cfg.Path, message.MediaType(s.d.cfg.Format.ContentFormat()), bytes.NewReader(payload))
	if err != nil {
		return false, false, err
	}
	defer s.cc.ReleaseMessage(req)
	if !s.d.cfg.Confirmable {
		req.SetType(message.NonConfirmable)
	}
	if s.d.cfg.ZeroToken {
		req.SetToken(nil)
	}
	resp, err := s.cc.Do(req)
	if err != nil {
		return false, s.cc.Context().Err() != nil, err
	}
	defer s.cc.ReleaseMessage(resp)
	if c := resp.Code(); c < codes.Created || c > codes.Content {
		e := &AnswerError{Code: c}
		if v, err := resp.GetOptionUint32(message.MaxAge); err == nil {
			e.MaxAge = time.Duration(v) * time.Second
		} else if c == codes.ServiceUnavailable {
			e.MaxAge = 60 * time.Second // Max-Age default (RFC 7252 §5.10.5)
		}
		return false, false, e
	}
	return true, false, nil
}

// AnswerError is a telemetry message the bridge answered with an error
// code (the session is alive; for 5.03, MaxAge says when to retry).
type AnswerError struct {
	Code   codes.Code
	MaxAge time.Duration
}

func (e *AnswerError) Error() string {
	if e.Code == codes.ServiceUnavailable {
		return fmt.Sprintf("telemetry refused: %v, retry in %v", e.Code, e.MaxAge)
	}
	return fmt.Sprintf("telemetry rejected: %v", e.Code)
}

func (s *coapSession) setAsleep(v bool) { s.fc.SetAsleep(v) }
func (s *coapSession) rebind() error    { return s.fc.Rebind() }
func (s *coapSession) done() <-chan struct{} {
	return s.cc.Done()
}

func (s *coapSession) close() {
	s.once.Do(func() {
		_ = s.cc.Close()
		_ = s.dc.Close()
		_ = s.fc.Close()
	})
}
