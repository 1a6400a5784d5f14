package coap

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// Session is one authenticated DTLS session of an endpoint.
type Session struct {
	// Endpoint is the registered endpoint behind this session.
	Endpoint registry.Endpoint
	// Conn is the go-coap connection: send requests to the device with
	// Conn.Do / Conn.Get / Conn.Observe.
	Conn *udpclient.Conn
	// Suite is the negotiated cipher suite.
	Suite dtls.CipherSuiteID
	// BytesIn and BytesOut approximate CoAP bytes from and to the device.
	BytesIn, BytesOut atomic.Uint64

	srv        *Server
	seq        uint64 // its conn's seq: the later of two sessions of an endpoint wins
	started    time.Time
	lastSeen   atomic.Int64  // unix nanoseconds: last request from the device
	lastActive atomic.Int64  // unix nanoseconds: last message either way (parking)
	inflight   atomic.Int32  // requests being served or sent (never parked)
	parked     atomic.Bool   // the conn was closed to park the session
	remote     atomic.Value  // string: last peer address
	rebinds    atomic.Uint64 // peer address changes within this session
}

// LastSeen is when the device last sent a request.
func (s *Session) LastSeen() time.Time { return time.Unix(0, s.lastSeen.Load()) }

// Remote is the device's current address (it changes on NAT rebinding).
func (s *Session) Remote() string { return s.Conn.RemoteAddr().String() }

// Rebinds counts address changes seen within this session.
func (s *Session) Rebinds() uint64 { return s.rebinds.Load() }

func (s *Session) touch() {
	now := time.Now().UnixNano()
	s.lastSeen.Store(now)
	s.lastActive.Store(now)
	addr := s.Conn.RemoteAddr().String()
	if prev, _ := s.remote.Swap(addr).(string); prev != "" && prev != addr {
		s.rebinds.Add(1)
		s.srv.Stats.Rebinds.Add(1)
		s.srv.log.Info("endpoint address changed, session kept (connection ID)", "endpoint", s.Endpoint.Name, "from", prev, "to", addr)
	}
}

// Do sends req to the device and waits for the response (which the caller
// must release with Conn.ReleaseMessage).
func (s *Session) Do(req *pool.Message) (*pool.Message, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	defer func() { s.lastActive.Store(time.Now().UnixNano()) }()
	s.lastActive.Store(time.Now().UnixNano())
	s.BytesOut.Add(uint64(bodyLen(req) + 4))
	resp, err := s.Conn.Do(req)
	if err == nil {
		s.BytesIn.Add(uint64(bodyLen(resp) + 4))
	}
	return resp, err
}

// listener hands go-coap a pion server conn for each conn the guard
// accepts (a peer past the cookie exchange) and each parked session that
// woke up (resumed from its exported state, already authenticated).
type listener struct {
	s *Server
}

func (l *listener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	g := l.s.guard
	select {
	case c := <-l.s.resumed:
		return c, nil
	case gc := <-g.accept:
		dc, err := dtls.ServerWithOptions(gc, gc.raddr, l.s.dtlsOpts...)
		if err != nil {
			_ = gc.Close()
			return nil, nil
		}
		return &conn{Conn: dc, s: l.s, gc: gc, seq: gc.order}, nil
	case <-g.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) Close() error { return l.s.guard.Close() }

// conn is a DTLS conn whose HandshakeContext (called by go-coap's server
// before serving) also maps the peer to its endpoint.
type conn struct {
	*dtls.Conn
	s     *Server
	mu    sync.Mutex        // serialises HandshakeContext (go-coap calls it before every read and write)
	done  bool              // guarded by mu: authenticated
	ep    registry.Endpoint // set once by HandshakeContext
	suite dtls.CipherSuiteID
	gc    *guardConn // the guard's conn under pion
	// woke is the parked session this conn resumed (nil for a handshake).
	woke *parkedSession
	// seq orders the conns of the server by when they started (the
	// guard conn's order): of two sessions of one endpoint, the later one
	// wins, whichever onNewConn runs first. Handshakes complete on pion's
	// goroutines and are seen by go-coap's, in no particular order.
	seq uint64
}

// HandshakeContext runs the DTLS handshake and authenticates the endpoint.
func (c *conn) HandshakeContext(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	if err := c.Conn.HandshakeContext(ctx); err != nil {
		c.s.Stats.HandshakeFailures.Add(1)
		c.s.warnf("dtls handshake failed", "peer", c.RemoteAddr().String(), "err", err.Error())
		return err
	}
	st, _ := c.ConnectionState()
	ep, err := c.s.authenticate(st)
	if err != nil {
		c.s.Stats.UnknownIdentity.Add(1)
		c.s.Stats.HandshakeFailures.Add(1)
		c.s.warnf("dtls peer rejected", "peer", c.RemoteAddr().String(), "reason", err.Error())
		return err
	}
	c.ep, c.suite, c.done = ep, st.CipherSuiteID, true
	c.s.guard.established(c.RemoteAddr())
	c.s.Stats.HandshakesOK.Add(1)
	return nil
}

// pionLogs is the logger factory of every pion conn: pion builds a default
// one (reading its PION_LOG_* environment) for each conn without one,
// ≈ 10 µs of a ≈ 150 µs handshake, the same for every conn.
var pionLogs = logging.NewDefaultLoggerFactory()
