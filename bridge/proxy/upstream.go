package proxy

// The upstream stage: one endpoint's go-coap clients toward central
// destinations, and the exchange that maps the device's token to a token
// of the proxy's own.
//
// Two rules keep an endpoint's upstream usable through any outage:
//
//   - Token mapping. A device token never reaches go-coap: every upstream
//     request carries a fresh 8-byte token of the proxy's own (RFC 7252
//     section 5.3.1 lets each hop choose its tokens), and the answer goes
//     back to the device under the device's token by the device-side
//     response writer. A zero-length device token (legal and common) would
//     otherwise make go-coap send a tokenless request, and after one
//     tokenless request that failed go-coap blocks every later tokenless
//     request on that conn (ErrTokenlessRequestsBlocked: a late response
//     could be mistaken for the next one) — for good, since nothing
//     replaced the conn.
//   - Replacement. A conn that is Done (closed underneath), or that reports
//     a state go-coap says needs a new conn, is dropped (and closed) and
//     the next exchange dials a fresh one. A failed exchange never closes
//     the device's DTLS session: the device gets a CoAP answer (5.03/5.04,
//     or 2.04 from the spool) and keeps its session.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapclient "github.com/plgd-dev/go-coap/v3/net/client"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// errUpstreamClosed is returned after close.
var errUpstreamClosed = errors.New("proxy: upstream closed")

// upstreams is one endpoint's go-coap clients by destination.
type upstreams struct {
	// dial opens a datagram conn to dst from the endpoint's address.
	dial func(dst netip.AddrPort) (net.Conn, error)
	// newConn runs a go-coap client over a dialled conn.
	newConn func(net.Conn) *udpclient.Conn
	// replaced counts conns dropped and re-dialled (shared Stats field).
	replaced *atomic.Uint64

	mu     sync.Mutex
	conns  map[netip.AddrPort]*udpclient.Conn // guarded by mu
	closed bool                               // guarded by mu
}

func newUpstreams(dial func(netip.AddrPort) (net.Conn, error), newConn func(net.Conn) *udpclient.Conn, replaced *atomic.Uint64) *upstreams {
	if replaced == nil {
		replaced = new(atomic.Uint64)
	}
	return &upstreams{dial: dial, newConn: newConn, replaced: replaced, conns: map[netip.AddrPort]*udpclient.Conn{}}
}

// get returns the live client for dst, dialling a new one if there is
// none or the last one is Done.
func (u *upstreams) get(dst netip.AddrPort) (*udpclient.Conn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, errUpstreamClosed
	}
	if c := u.conns[dst]; c != nil {
		select {
		case <-c.Done():
			delete(u.conns, dst)
			u.replaced.Add(1)
		default:
			return c, nil
		}
	}
	nc, err := u.dial(dst)
	if err != nil {
		return nil, err
	}
	c := u.newConn(nc)
	u.conns[dst] = c
	return c, nil
}

// failed reports an exchange on c toward dst that ended with err. A conn
// that is Done or poisoned is dropped and closed, so the next exchange
// dials a fresh one; a plain timeout (the uplink is down, central is
// slow) keeps it: observations may live on it.
func (u *upstreams) failed(dst netip.AddrPort, c *udpclient.Conn, err error) {
	poisoned := errors.Is(err, coapclient.ErrTokenlessRequestsBlocked)
	select {
	case <-c.Done():
		poisoned = true
	default:
	}
	if !poisoned {
		return
	}
	u.mu.Lock()
	drop := u.conns[dst] == c
	if drop {
		delete(u.conns, dst)
	}
	u.mu.Unlock()
	if drop {
		u.replaced.Add(1)
		_ = c.Close()
	}
}

// close closes every client; later gets fail.
func (u *upstreams) close() {
	u.mu.Lock()
	u.closed = true
	cs := u.conns
	u.conns = map[netip.AddrPort]*udpclient.Conn{}
	u.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// exchange sends a copy of the device request r (path and query as the
// next hop needs them) to dst under a token of the proxy's own and
// returns the response as content. The device's token is never sent
// upstream (see the file comment).
func (u *upstreams) exchange(ctx context.Context, dst netip.AddrPort, r *pool.Message, path string, query []string) (content, error) {
	c, err := u.get(dst)
	if err != nil {
		return content{}, err
	}
	req := c.AcquireMessage(ctx)
	defer c.ReleaseMessage(req)
	copyRequest(req, r, path, query)
	tok, err := message.GetToken()
	if err != nil {
		return content{}, err
	}
	req.SetToken(tok)
	resp, err := c.Do(req)
	if err != nil {
		u.failed(dst, c, err)
		return content{}, err
	}
	defer c.ReleaseMessage(resp)
	return contentOf(resp), nil
}
