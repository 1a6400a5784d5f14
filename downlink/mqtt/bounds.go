package mqtt

import (
	"bytes"
	"net"
	"net/netip"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Bounds on what one device or an unauthenticated peer can make the broker
// keep (issue 18). mochi's own capabilities cover some (topic aliases,
// receive maximum, queued messages, session expiry, packet size: set in
// New); boundsHook covers the rest in its own mochi hook, so the
// authentication/namespace hook (hook.go) stays as it is:
//
//   - topic length: a PUBLISH, SUBSCRIBE or will with a longer topic ends
//     the connection before mochi stores an inbound topic alias for it
//     (mochi stores aliases before OnPublish);
//   - subscriptions per client: filters over MaxSubscriptions get a failure
//     reason code in the SUBACK;
//   - retained messages: a device's retained publish is relayed upstream
//     with its retain flag, but the broker keeps at most RetainedPerEndpoint
//     of the endpoint's topics (none by default: no device reads them);
//   - connections before CONNECT (TLS handshake included), per source IP
//     and in total, checked when the connection is accepted.
type boundsHook struct {
	mochi.HookBase
	b *Broker

	mu       sync.Mutex
	retained map[string]map[string]struct{} // guarded by mu: endpoint -> retained device topics
}

func (h *boundsHook) ID() string { return "fleetgate-bounds" }

func (h *boundsHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnPacketRead, mochi.OnSubscribe, mochi.OnPublish, mochi.OnConnect}, []byte{b})
}

// OnPacketRead refuses over-long topics before mochi handles the packet.
func (h *boundsHook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	max := h.b.cfg.MaxTopicLength
	long := false
	switch pk.FixedHeader.Type {
	case packets.Publish:
		long = len(pk.TopicName) > max
	case packets.Subscribe, packets.Unsubscribe:
		for _, f := range pk.Filters {
			long = long || len(f.Filter) > max
		}
	case packets.Connect:
		long = len(pk.Connect.WillTopic) > max
	}
	if long {
		h.b.stats.TopicTooLong.Add(1)
		h.b.warn("mqtt topic too long: connection closed", "client_id", cl.ID, "peer", cl.Net.Remote, "max", max)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// subscriptionLimit is a filter mochi refuses as invalid ('#' not a whole
// level): the SUBACK carries a failure for it (0x8F in MQTT 5, 0x80 in
// 3.1.1) and nothing is stored.
const subscriptionLimit = "subscription-limit#"

// OnSubscribe (after hook.OnSubscribe mounted the filters) refuses filters
// that would take the client over MaxSubscriptions.
func (h *boundsHook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	n := cl.State.Subscriptions.Len()
	for i, f := range pk.Filters {
		if _, have := cl.State.Subscriptions.Get(f.Filter); have {
			continue
		}
		if n >= h.b.cfg.MaxSubscriptions {
			h.b.stats.SubscriptionsRefused.Add(1)
			h.b.warn("mqtt subscription limit", "client_id", cl.ID, "max", h.b.cfg.MaxSubscriptions)
			pk.Filters[i].Filter = subscriptionLimit
			continue
		}
		n++
	}
	return pk
}

// OnPublish (after hook.OnPublish relayed the message upstream, retain flag
// included) decides whether the broker keeps it as retained.
func (h *boundsHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !pk.FixedHeader.Retain {
		return pk, nil
	}
	if !validEndpointName(cl.ID) { // hook.OnConnectAuthenticate made the client ID the endpoint
		return pk, nil
	}
	ep := cl.ID
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.retained[ep]
	_, have := set[pk.TopicName]
	switch {
	case len(pk.Payload) == 0: // clears the retained message
		delete(set, pk.TopicName)
	case have:
	case len(set) < h.b.cfg.RetainedPerEndpoint:
		if set == nil {
			set = map[string]struct{}{}
			h.retained[ep] = set
		}
		set[pk.TopicName] = struct{}{}
	default:
		h.b.stats.RetainDropped.Add(1)
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

// OnConnect: the CONNECT arrived, the connection is no longer pending.
func (h *boundsHook) OnConnect(cl *mochi.Client, _ packets.Packet) error {
	h.b.pending.release(cl.Net.Conn)
	return nil
}

// pendingConns counts connections accepted but without a CONNECT yet.
type pendingConns struct {
	max, maxPerSource int

	mu    sync.Mutex
	total int                     // guarded by mu
	by    map[netip.Addr]int      // guarded by mu
	conns map[net.Conn]netip.Addr // guarded by mu
}

// admit takes a slot for c; ok false says which bound refused it.
func (p *pendingConns) admit(c net.Conn) (ok, perSource bool) {
	var src netip.Addr // one shared bucket for an address of no known form
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		src = a.AddrPort().Addr().Unmap()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			src = ap.Addr().Unmap()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total >= p.max {
		return false, false
	}
	if p.by[src] >= p.maxPerSource {
		return false, true
	}
	p.total++
	p.by[src]++
	p.conns[c] = src
	return true, false
}

// release frees c's slot (idempotent).
func (p *pendingConns) release(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	src, ok := p.conns[c]
	if !ok {
		return
	}
	delete(p.conns, c)
	p.total--
	if p.by[src]--; p.by[src] <= 0 {
		delete(p.by, src)
	}
}

// Pending returns the connections waiting for their CONNECT.
func (b *Broker) Pending() int {
	b.pending.mu.Lock()
	defer b.pending.mu.Unlock()
	return b.pending.total
}
