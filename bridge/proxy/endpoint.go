package proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack"
)

// endpointState is one endpoint's address-side state: its entry in the
// demultiplexer (central → device datagrams to <addr>:5683, demux.go),
// upstream clients by destination, and the queue of central → device
// requests waiting for the device to wake.
type endpointState struct {
	ep   registry.Endpoint
	st   *ipstack.Stack
	gone atomic.Bool // removed: nothing more is sent from its address
	// finalMu orders central observers' final notifications (finishDown)
	// before close: none is sent from a gone endpoint.
	finalMu sync.Mutex
	up      *upstreams // its own lock
	fwd     *forwarder // nil without a CoAP spool; set before it is demultiplexed to
	ex      exchanges  // its own lock: dedup and in-flight slots (exchange.go)
	// upSeq numbers its requests through the upstream table (uptable.go).
	upSeq atomic.Uint32

	mu      sync.Mutex
	queue   []queued              // guarded by mu
	down    map[string]*downObs   // guarded by mu: central observers by peer|token
	downMID map[int32]*downObs    // guarded by mu: unacknowledged CON notifications
	upObs   map[string]*upObs     // guarded by mu: device observations by token
	upMID   map[int32]*upObs      // guarded by mu: last NON notification to the device
	uploads map[string]*upload    // guarded by mu: Block1 reassembly
	bodies  map[string]cachedBody // guarded by mu: Block2 bodies for follow-ups
}

func newEndpointState(ep registry.Endpoint, st *ipstack.Stack, up *upstreams) *endpointState {
	e := &endpointState{ep: ep, st: st, up: up,
		down: map[string]*downObs{}, downMID: map[int32]*downObs{}, upObs: map[string]*upObs{},
		upMID: map[int32]*upObs{}, uploads: map[string]*upload{}, bodies: map[string]cachedBody{}}
	e.upSeq.Store(rand.Uint32N(1 << 16))
	return e
}

// endpoint returns an endpoint's state, or nil.
func (p *Proxy) endpoint(name string) *endpointState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eps[name]
}

// queued is a central → device request waiting for the device.
type queued struct {
	msg      *pool.Message
	from     net.Addr
	deadline time.Time
}

func (e *endpointState) close() {
	if e.fwd != nil {
		e.fwd.stop()
	}
	e.finalMu.Lock()
	e.gone.Store(true)
	e.finalMu.Unlock()
	e.up.close()
}

// AddEndpoint serves an endpoint: its address is part of the routed
// prefix the stack owns (no stack address, no socket, no goroutine); a CoAP
// endpoint gets an entry in the demultiplexer for central → device CoAP.
func (p *Proxy) AddEndpoint(ep registry.Endpoint) error {
	if !p.cfg.Stack.Routed(ep.Addr) {
		return fmt.Errorf("proxy: endpoint %s address %s is outside the routed prefix %s", ep.Name, ep.Addr, p.cfg.Registry.Prefix())
	}
	if ep.Protocol != registry.CoAP {
		return nil
	}
	e := newEndpointState(ep, p.cfg.Stack, p.newUpstreams(ep))
	p.startForwarder(e)
	p.mu.Lock()
	old := p.eps[ep.Name]
	p.eps[ep.Name] = e
	p.mu.Unlock()
	p.dmu.Lock()
	if old != nil {
		p.unindexLocked(old)
	}
	p.indexLocked(e)
	p.dmu.Unlock()
	if old != nil {
		p.endObservations(old, true)
		old.close()
	}
	return nil
}

// newUpstreams returns ep's upstream clients: dialled in ipstack from the
// endpoint's address, replaced when they fail (upstream.go).
func (p *Proxy) newUpstreams(ep registry.Endpoint) *upstreams {
	dial := func(dst netip.AddrPort) (net.Conn, error) {
		return p.cfg.Stack.DialUDP(netip.AddrPortFrom(srcFor(ep, dst.Addr()), 0), dst)
	}
	newConn := func(nc net.Conn) *udpclient.Conn {
		return newCoAPClient(p.ctx, nc, func(err error) { p.warnf("upstream coap", "endpoint", ep.Name, "err", err.Error()) })
	}
	return newUpstreams(dial, newConn, &p.Stats.UpstreamReplaced)
}

// upstream returns the live client for ep → dst (upstream.go).
func (p *Proxy) upstream(ep registry.Endpoint, dst netip.AddrPort) (*upstreams, *udpclient.Conn, error) {
	p.mu.Lock()
	e := p.eps[ep.Name]
	p.mu.Unlock()
	if e == nil {
		return nil, nil, errors.New("proxy: endpoint not added")
	}
	c, err := e.up.get(dst)
	return e.up, c, err
}
