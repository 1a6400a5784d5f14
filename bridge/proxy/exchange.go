package proxy

// The exchange stage (RFC 7252 sections 4.5 and 4.7), between the
// demultiplexer (demux.go) and the relay to the device (relay.go), and
// between the device-side CoAP server (downlink/coap) and the upstream
// stage (upstream.go):
//
//   - Deduplication, central → device. Every request a central peer sends
//     to an endpoint address is remembered by (peer addr:port, message ID)
//     for EXCHANGE_LIFETIME. A duplicate (the peer retransmitted its CON,
//     or a NON arrived twice) is not relayed again: if the first copy was
//     answered, the duplicate gets the very same bytes (same ACK, same
//     piggybacked response); while the first copy is still being relayed
//     it is dropped (the peer retransmits again later). The table is
//     bounded per endpoint (Config.DedupPerEndpoint, oldest evicted first,
//     counted) and allocated on an endpoint's first request, so an idle
//     endpoint holds none.
//   - Deduplication, device → central: go-coap's server conn does it per
//     DTLS session (a duplicate waits for the first copy's handler and is
//     answered from go-coap's response cache), so a device's retransmitted
//     CON reaches upstream once; TestDedupDeviceToCentral holds it.
//   - Concurrency. Each endpoint has at most Config.NStart exchanges in
//     flight per direction (central → device: requests relayed over the
//     DTLS session; device → central: requests sent upstream), and the
//     bridge at most Config.MaxInFlight across all endpoints. A request
//     over either bound is answered 5.03 Service Unavailable with Max-Age
//     Config.OverloadMaxAge at once instead of queueing without limit.
//
// The stage only decides and remembers; it writes nothing. Its verdicts go
// back to the intake (demux.go), and every answer to a central request is
// written by answer.go's writeAnswer, which records the bytes here for
// duplicates.

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Defaults for the exchange fields of Config.
const (
	// DefaultNStart is the per-endpoint, per-direction bound of exchanges
	// in flight. RFC 7252's NSTART is 1 for a plain client; the bridge
	// relays for many central clients at once and the device's go-coap
	// conn serialises nothing, so a small number above 1 keeps parallel
	// central clients of one device working.
	DefaultNStart = 4
	// DefaultMaxInFlight bounds the exchanges in flight in the whole bridge.
	DefaultMaxInFlight = 4096
	// DefaultOverloadMaxAge is the Max-Age of a 5.03 answered over NSTART
	// or MaxInFlight.
	DefaultOverloadMaxAge = 2 * time.Second
	// DefaultDedupPerEndpoint bounds the remembered central requests per
	// endpoint.
	DefaultDedupPerEndpoint = 128
	// ExchangeLifetime is how long a message ID is remembered (RFC 7252
	// section 4.8.2, default transmission parameters).
	ExchangeLifetime = 247 * time.Second
)

// exKey names a central request: the peer and its message ID.
type exKey struct {
	peer netip.AddrPort
	mid  uint16
}

type exEntry struct {
	key  exKey
	at   time.Time
	resp []byte // the answer sent, nil while the request is in progress
}

// exchanges is one endpoint's exchange state.
type exchanges struct {
	mu      sync.Mutex
	seen    map[exKey]*exEntry // guarded by mu; nil until the first request
	order   []*exEntry         // guarded by mu: oldest first, from head
	head    int                // guarded by mu
	down    int                // guarded by mu: central → device in flight
	upwards int                // guarded by mu: device → central in flight
}

// dedup outcomes.
const (
	exNew       = iota // first copy: process it
	exDuplicate        // answered already: resend resp
	exInProgress
)

// begin records a central request or reports it a duplicate (with the
// answer to resend). Entries older than ExchangeLifetime are dropped, and
// the oldest beyond limit (evicted counts those).
func (x *exchanges) begin(now time.Time, k exKey, limit int, evicted *uint64) (int, []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.seen == nil {
		x.seen = map[exKey]*exEntry{}
	}
	if en := x.seen[k]; en != nil && now.Sub(en.at) < ExchangeLifetime {
		if en.resp == nil {
			return exInProgress, nil
		}
		return exDuplicate, en.resp
	}
	for x.head < len(x.order) {
		old := x.order[x.head]
		if now.Sub(old.at) < ExchangeLifetime && len(x.order)-x.head < limit {
			break
		}
		if now.Sub(old.at) < ExchangeLifetime {
			*evicted++
		}
		if x.seen[old.key] == old {
			delete(x.seen, old.key)
		}
		x.order[x.head] = nil
		x.head++
	}
	if x.head > 0 && x.head >= len(x.order)/2 { // compact: the slice never grows past 2 × limit
		x.order = append(x.order[:0], x.order[x.head:]...)
		x.head = 0
	}
	en := &exEntry{key: k, at: now}
	x.seen[k] = en
	x.order = append(x.order, en)
	return exNew, nil
}

// answered records the first answer sent for k (a later one, e.g. the
// separate response after an empty ACK, is not what a duplicate CON
// needs: it needs the same ACK again).
func (x *exchanges) answered(k exKey, b []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if en := x.seen[k]; en != nil && en.resp == nil {
		en.resp = append([]byte(nil), b...)
	}
}

// remembered returns how many central requests are remembered.
func (x *exchanges) remembered() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.seen)
}

// keyOf is the dedup key of a request from peer.
func keyOf(peer net.Addr, m *pool.Message) (exKey, bool) {
	ua, ok := peer.(*net.UDPAddr)
	if !ok {
		return exKey{}, false
	}
	return exKey{peer: ua.AddrPort(), mid: uint16(m.MessageID())}, true
}

// dedupCentral runs the deduplication of a central request. done means
// the request was a duplicate and goes no further; resend, if not nil, is
// the first copy's recorded answer, which the intake sends again (nil: the
// first copy is still in progress and the duplicate is dropped).
func (p *Proxy) dedupCentral(e *endpointState, m *pool.Message, from net.Addr) (resend []byte, done bool) {
	k, ok := keyOf(from, m)
	if !ok {
		return nil, false
	}
	var evicted uint64
	what, resp := e.ex.begin(p.now(), k, p.cfg.DedupPerEndpoint, &evicted)
	if evicted > 0 {
		p.Stats.DedupEvicted.Add(evicted)
	}
	switch what {
	case exDuplicate:
		p.Stats.Duplicates.Add(1)
		p.Stats.DuplicatesAnswered.Add(1)
		return resp, true
	case exInProgress:
		p.Stats.Duplicates.Add(1)
		return nil, true
	}
	return nil, false
}

// Directions of acquire/release.
const (
	dirDown = iota // central → device
	dirUp          // device → central
)

// acquire takes an in-flight slot of endpoint e in direction dir; false
// means NSTART or the bridge's MaxInFlight is reached (counted).
func (p *Proxy) acquire(e *endpointState, dir int) bool {
	if p.inFlight.Add(1) > int64(p.cfg.MaxInFlight) {
		p.inFlight.Add(-1)
		p.Stats.OverloadBridge.Add(1)
		return false
	}
	e.ex.mu.Lock()
	n := &e.ex.down
	if dir == dirUp {
		n = &e.ex.upwards
	}
	ok := *n < p.cfg.NStart
	if ok {
		*n++
	}
	e.ex.mu.Unlock()
	if !ok {
		p.inFlight.Add(-1)
		p.Stats.OverloadEndpoint.Add(1)
	}
	return ok
}

// release returns a slot taken by acquire.
func (p *Proxy) release(e *endpointState, dir int) {
	e.ex.mu.Lock()
	if dir == dirUp {
		e.ex.upwards--
	} else {
		e.ex.down--
	}
	e.ex.mu.Unlock()
	p.inFlight.Add(-1)
}

// overloadOpt is the Max-Age option of an overload 5.03.
func (p *Proxy) overloadOpt() message.Option {
	return message.Option{ID: message.MaxAge, Value: uintOpt(uint32(p.cfg.OverloadMaxAge / time.Second))}
}

// overloadCentral is the answer to a central request refused over NStart
// or MaxInFlight: 5.03 with Max-Age.
func (p *Proxy) overloadCentral(e *endpointState, from net.Addr) answer {
	p.warnf("endpoint overloaded, central request refused", "endpoint", e.ep.Name, "peer", from.String())
	return codeAnswer(codes.ServiceUnavailable, p.overloadOpt())
}

// overloadDevice answers a device request 5.03 with Max-Age.
func (p *Proxy) overloadDevice(name string, w *responsewriter.ResponseWriter[*udpclient.Conn]) {
	p.warnf("endpoint overloaded, device request refused", "endpoint", name)
	_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, nil, p.overloadOpt())
}

// now is the proxy's clock.
func (p *Proxy) now() time.Time {
	if p.cfg.Now != nil {
		return p.cfg.Now()
	}
	return time.Now()
}
