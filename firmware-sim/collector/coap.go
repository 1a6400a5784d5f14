package collector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// CoAPHandler returns a CoAP handler accepting telemetry: POST or PUT on
// any path with Content-Format senml+json (110) or senml+cbor (112) is
// recorded and answered 2.04 Changed; an undecodable pack gets 4.00 Bad
// Request, another Content-Format 4.15, another method 4.05 (RFC 7252
// §5.9). source labels the sink ("coap" or "coaps").
func (c *Collector) CoAPHandler(source string) mux.Handler {
	return mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		if r.Code() != codes.POST && r.Code() != codes.PUT {
			_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
			return
		}
		cf, err := r.ContentFormat()
		if err != nil {
			cf = message.MediaType(senml.ContentFormatJSON)
		}
		f, err := senml.FormatFromContentFormat(uint16(cf))
		if err != nil {
			c.malformed(source, w.Conn().RemoteAddr().String(), err)
			_ = w.SetResponse(codes.UnsupportedMediaType, message.TextPlain, nil)
			return
		}
		body, err := r.ReadBody()
		if err != nil {
			_ = w.SetResponse(codes.BadRequest, message.TextPlain, nil)
			return
		}
		if _, err := c.Handle(source, w.Conn().RemoteAddr().String(), body, f); err != nil {
			_ = w.SetResponse(codes.BadRequest, message.TextPlain, bytes.NewReader([]byte(err.Error())))
			return
		}
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	})
}

// ServeCoAP serves plain CoAP telemetry on conn (e.g. from
// coapnet.NewListenUDP) until ctx ends. The bridge forwards device
// telemetry this way from each endpoint's VPN address.
func (c *Collector) ServeCoAP(ctx context.Context, conn *coapnet.UDPConn) error {
	s := udpserver.New(options.WithMux(c.CoAPHandler("coap")), options.WithContext(ctx), options.WithErrors(c.coapError), options.WithPeriodicRunner(fastRunner))
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	err := s.Serve(conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ServeCoAPDTLS serves CoAP telemetry over DTLS on l until ctx ends; extra
// options (e.g. options.WithOnNewConn) are passed to the go-coap server.
func (c *Collector) ServeCoAPDTLS(ctx context.Context, l dtlsserver.Listener, extra ...dtlsserver.Option) error {
	opts := append([]dtlsserver.Option{options.WithMux(c.CoAPHandler("coaps")), options.WithContext(ctx), options.WithErrors(c.coapError), options.WithPeriodicRunner(fastRunner)}, extra...)
	s := dtlsserver.New(opts...)
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	err := s.Serve(l)
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// fastRunner drives go-coap's expiry checks every 250 ms instead of its
// default 4 s, so that sessions and caches are cleaned up (and the server
// stops) promptly.
func fastRunner(f func(time.Time) bool) {
	go func() {
		for f(time.Now()) {
			time.Sleep(250 * time.Millisecond)
		}
	}()
}

// coapError receives go-coap's transport errors (failed handshakes, closed
// connections): counted and logged at debug level, never printed.
func (c *Collector) coapError(err error) {
	c.Stats.TransportErrors.Add(1)
	c.log.Debug("coap transport", "err", err)
}

// DTLSConfig describes a DTLS listener for devices.
type DTLSConfig struct {
	// Addr is host:port to listen on.
	Addr string
	// Creds answers PSK identities (creds.Set.PSK); nil disables PSK.
	Creds *creds.Set
	// Cert is the server certificate for ECDHE-ECDSA suites; nil disables
	// certificate suites.
	Cert *tls.Certificate
	// ClientCAs verifies device certificates (required with Cert).
	ClientCAs *x509.CertPool
	// CID enables Connection ID (RFC 9146) with 8-byte server CIDs.
	CID bool
}

// ListenDTLS opens a DTLS listener offering PSK and/or ECDSA suites with
// CCM_8 and GCM (RFC 6655, RFC 5487, RFC 7251).
func ListenDTLS(cfg DTLSConfig) (*coapnet.DTLSListener, error) {
	var suites []piondtls.CipherSuiteID
	opts := []piondtls.ServerOption{piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret)}
	if cfg.Cert != nil {
		suites = append(suites, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
		opts = append(opts, piondtls.WithCertificates(*cfg.Cert), piondtls.WithClientAuth(piondtls.RequireAndVerifyClientCert), piondtls.WithClientCAs(cfg.ClientCAs))
	}
	if cfg.Creds != nil {
		suites = append(suites, piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256)
		opts = append(opts, piondtls.WithPSK(cfg.Creds.PSK), piondtls.WithPSKIdentityHint([]byte("fleetgate")))
	}
	if len(suites) == 0 {
		return nil, errors.New("collector: DTLS listener needs PSK credentials or a certificate")
	}
	opts = append(opts, piondtls.WithCipherSuites(suites...))
	if cfg.CID {
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(8)))
	}
	return coapnet.NewDTLSListener("udp", cfg.Addr, coapnet.NewDTLSServerOptions(opts...))
}
