package proxy

import (
	"context"
	"net"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// newCoAPClient runs a go-coap client over a connected datagram net.Conn
// (an ipstack UDP conn). go-coap's own UDP client needs a *net.UDPConn;
// its DTLS session type only needs a datagram-preserving net.Conn, which
// a netstack UDP conn is. Block-wise transfers (RFC 7959) are on.
func newCoAPClient(ctx context.Context, nc net.Conn, errs func(error)) *udpclient.Conn {
	return newCoAPConn(ctx, nc, errs, nil)
}

// newCoAPConn is newCoAPClient with a handler for requests from the peer
// (nil: go-coap's default, 4.04).
func newCoAPConn(ctx context.Context, nc net.Conn, errs func(error), h udpclient.HandlerFunc) *udpclient.Conn {
	cfg := coapdtls.DefaultConfig
	if errs == nil {
		errs = func(error) {}
	}
	if h != nil {
		cfg.Handler = h
	}
	cfg.Ctx = ctx
	cfg.Errors = errs
	cfg.BlockwiseEnable = true
	cfg.BlockwiseSZX = blockwise.SZX1024
	cfg.BlockwiseTransferTimeout = time.Minute
	cfg.MessagePool = pool.New(0, 0)
	cfg.CreateInactivityMonitor = func() udpclient.InactivityMonitor {
		return inactivity.NewNilMonitor[*udpclient.Conn]()
	}
	createBW := func(cc *udpclient.Conn) *blockwise.BlockWise[*udpclient.Conn] {
		return blockwise.New(cc, cfg.BlockwiseTransferTimeout, cfg.Errors,
			func(token message.Token) (*pool.Message, bool) { return cc.GetObservationRequest(token) })
	}
	session := dtlsserver.NewSession(ctx, coapnet.NewConn(nc), cfg.MaxMessageSize, cfg.MTU, true)
	cc := udpclient.NewConnWithOpts(session, &cfg, udpclient.WithBlockWise(createBW))
	cfg.PeriodicRunner(func(now time.Time) bool {
		cc.CheckExpirations(now)
		return cc.Context().Err() == nil
	})
	go func() {
		if err := cc.Run(); err != nil && errs != nil {
			errs(err)
		}
	}()
	return cc
}
