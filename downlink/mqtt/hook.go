package mqtt

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
)

// hook is the broker's single mochi hook: authentication, per-endpoint
// topic namespaces (mount prefix), ACL, and the hand-off to the Upstream.
type hook struct {
	mochi.HookBase
	b *Broker

	mu        sync.Mutex
	connected map[string]int           // endpoint -> connected sessions
	limits    map[string]*rate.Limiter // endpoint -> publish rate limit
	// byteLimits: endpoint -> publish byte rate limit.
	byteLimits map[string]*rate.Limiter
	// revoking counts Revoke calls running per endpoint (CONNECTs refused
	// meanwhile); revoked holds the clients being cut off, closed by
	// OnDisconnect when their connection goroutine ends. Both are emptied
	// by Revoke before it returns.
	revoking map[string]int
	revoked  map[*mochi.Client]chan struct{}
}

// ID implements mochi.Hook.
func (h *hook) ID() string { return "fleetgate-endpoint" }

// Provides implements mochi.Hook.
func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnSubscribe, mochi.OnUnsubscribe, mochi.OnPublish,
		mochi.OnPacketEncode, mochi.OnWill, mochi.OnWillSent,
	}, []byte{b})
}

// endpoint returns the endpoint a client acts for. OnConnectAuthenticate
// refuses any client whose ID is not its endpoint name, and mochi handles
// packets only of authenticated clients, so the client ID is the endpoint,
// also for a sleeping device's kept session (whose connection is gone).
func (h *hook) endpoint(cl *mochi.Client) (string, bool) {
	if cl == nil || cl.Net.Inline || !validEndpointName(cl.ID) {
		return "", false
	}
	return cl.ID, true
}

// OnConnectAuthenticate maps the CONNECT's credentials to an endpoint: a
// verified client certificate first, else username/password. The client ID
// must be the endpoint name (so sessions, and with them persistent commands,
// cannot be hijacked), and a will must lie inside the endpoint's mapping.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	ep, how := "", ""
	var certErr error
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if cs := tc.ConnectionState(); len(cs.VerifiedChains) > 0 && len(cs.PeerCertificates) > 0 {
			if cc, ok := h.b.cfg.Auth.(CertificateChecker); ok {
				if e, err := cc.CheckCertificate(cs.PeerCertificates[0]); err == nil {
					ep, how = e, "certificate"
				} else {
					certErr = err
				}
			} else if e, ok := h.b.cfg.Auth.Certificate(cs.PeerCertificates[0]); ok {
				ep, how = e, "certificate"
			}
		}
	}
	if ep == "" && pk.Connect.UsernameFlag {
		if e, ok := h.b.cfg.Auth.Password(string(pk.Connect.Username), pk.Connect.Password); ok {
			ep, how = e, "password"
		}
	}
	reason := ""
	switch {
	case ep == "" && certErr != nil:
		h.b.stats.CertRefused.Add(1)
		reason = "certificate refused: " + certErr.Error()
	case ep == "":
		reason = "bad credentials"
	case !validEndpointName(ep):
		reason = "endpoint name is not a topic level"
	case cl.ID != ep:
		reason = "client id is not the endpoint name"
	case h.isRevoking(ep):
		reason = "endpoint is being revoked"
	case pk.Connect.WillFlag && !h.b.acl.CanPublish(pk.Connect.WillTopic):
		h.b.stats.TopicDenied.Add(1)
		reason = "will topic outside mapping"
	}
	if reason != "" {
		h.b.stats.AuthFailures.Add(1)
		h.b.warn("mqtt connect refused", "peer", cl.Net.Remote, "client_id", cl.ID,
			"username", string(pk.Connect.Username), "reason", reason)
		return false
	}
	h.b.log.Debug("mqtt device authenticated", "endpoint", ep, "peer", cl.Net.Remote, "method", how)
	return true
}

// OnSessionEstablished marks the endpoint connected.
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	ep, ok := h.endpoint(cl)
	if !ok {
		return
	}
	h.mu.Lock()
	h.connected[ep]++
	h.mu.Unlock()
	h.b.stats.Connects.Add(1)
	h.b.stats.Connected.Add(1)
	h.b.log.Info("mqtt device connected", "endpoint", ep, "peer", cl.Net.Remote,
		"protocol_version", cl.Properties.ProtocolVersion, "clean", cl.Properties.Clean)
}

func (h *hook) isRevoking(ep string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.revoking[ep] > 0
}

// OnDisconnect forgets the client and logs why the session ended.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	ep, ok := h.endpoint(cl)
	if !ok {
		return
	}
	h.mu.Lock()
	if gone, r := h.revoked[cl]; r {
		select {
		case <-gone:
		default:
			close(gone)
		}
	}
	n, counted := h.connected[ep]
	if n <= 1 {
		delete(h.connected, ep)
	} else {
		h.connected[ep] = n - 1
	}
	h.mu.Unlock()
	if !counted {
		return // a session restored from the session store, never connected here
	}
	h.b.stats.Connected.Add(-1)
	h.b.log.Info("mqtt device disconnected", "endpoint", ep, "reason", errString(err), "session_kept", !expire)
}

func errString(err error) string {
	if err == nil {
		return "client disconnect"
	}
	return err.Error()
}

// classify counts malformed and oversized packets that ended a connection.
func (h *hook) classify(err error) {
	var code packets.Code
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		h.b.stats.Timeouts.Add(1)
		return
	}
	if err == nil || !errors.As(err, &code) {
		return
	}
	switch code.Code {
	case packets.ErrPacketTooLarge.Code:
		h.b.stats.Oversized.Add(1)
		h.b.warn("mqtt packet too large", "err", err)
	case packets.ErrTopicAliasInvalid.Code:
		h.b.stats.AliasRefused.Add(1)
		h.b.warn("mqtt topic alias over the maximum", "err", err)
	case packets.ErrMalformedPacket.Code, packets.ErrProtocolViolation.Code:
		h.b.stats.Malformed.Add(1)
		h.b.warn("mqtt malformed packet", "err", err)
	}
}

// OnACLCheck: publishes are checked on the device-side topic (before
// OnPublish mounts it); subscriptions (after OnSubscribe mounted them) and
// deliveries carry internal topics and must lie in the client's own
// namespace.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	ep, ok := h.endpoint(cl)
	if !ok {
		return false
	}
	var allowed bool
	if write {
		allowed = h.b.acl.CanPublish(topic)
	} else if t, in := unmount(ep, topic); in {
		allowed = h.b.acl.CanSubscribe(t)
	}
	if !allowed {
		h.b.stats.TopicDenied.Add(1)
		h.b.warn("mqtt topic refused", "endpoint", ep, "topic", topic, "write", write)
	}
	return allowed
}

// OnSubscribe mounts every filter into the endpoint's namespace; OnACLCheck
// then refuses the ones outside the mapping.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	ep, ok := h.endpoint(cl)
	if !ok {
		return pk
	}
	for i := range pk.Filters {
		pk.Filters[i].Filter = mount(ep, pk.Filters[i].Filter)
	}
	return pk
}

// OnUnsubscribe mounts the filters like OnSubscribe.
func (h *hook) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	return h.OnSubscribe(cl, pk)
}

// OnPublish hands a device's message to the Upstream, synchronously, before
// mochi acknowledges it: for QoS 1/2 the Upstream spools it durably first.
// If the Upstream refuses, an MQTT 5 device gets PUBACK 0x97 (quota
// exceeded) for QoS 1; other devices get no acknowledgement and are
// disconnected, so they keep the message and resend it after reconnecting.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	ep, ok := h.endpoint(cl)
	if !ok {
		return pk, packets.ErrRejectPacket
	}
	if h.revokedClient(cl) {
		h.b.stats.RevokedPublishes.Add(1)
		return pk, packets.ErrRejectPacket
	}
	if !h.allow(ep) {
		h.b.stats.RateLimited.Add(1)
		h.b.warn("mqtt publish rate limit", "endpoint", ep)
		return pk, h.refuse(cl, pk)
	}
	if n := len(pk.TopicName) + len(pk.Payload); !h.allowBytes(ep, n) {
		h.b.stats.ByteRateLimited.Add(1)
		h.b.warn("mqtt publish byte rate limit", "endpoint", ep, "bytes", n)
		return pk, h.refuse(cl, pk)
	}
	if h.b.cfg.Upstream != nil {
		m := Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain,
			PacketID: pk.PacketID, Dup: pk.FixedHeader.Dup}
		if err := h.b.cfg.Upstream.Publish(ep, m); err != nil {
			h.b.stats.UpstreamRefused.Add(1)
			h.b.warn("mqtt publish refused by upstream", "endpoint", ep, "qos", m.QoS, "err", err)
			return pk, h.refuse(cl, pk)
		}
		h.b.stats.Upstream.Add(1)
	}
	pk.TopicName = mount(ep, pk.TopicName)
	return pk, nil
}

// refuse picks how a publish the bridge cannot take is refused: QoS 0 is
// dropped; an MQTT 5 QoS 1 gets PUBACK 0x97 (quota exceeded); otherwise
// (MQTT 3.1.1, or QoS 2, where mochi would answer with the wrong packet
// type) the device gets no acknowledgement and is disconnected, so it keeps
// the message and resends it after reconnecting.
func (h *hook) refuse(cl *mochi.Client, pk packets.Packet) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
		return packets.ErrQuotaExceeded
	}
	cl.Stop(packets.ErrQuotaExceeded)
	return packets.ErrRejectPacket
}

// allow applies the endpoint's publish rate limit.
func (h *hook) allow(ep string) bool {
	if h.b.cfg.PublishRate <= 0 {
		return true
	}
	return h.take(h.limits, ep, h.b.cfg.PublishRate, h.b.cfg.PublishBurst, 1)
}

// allowBytes applies the endpoint's publish byte rate limit to a publish
// of n bytes.
func (h *hook) allowBytes(ep string, n int) bool {
	if h.b.cfg.PublishByteRate < 0 {
		return true
	}
	return h.take(h.byteLimits, ep, h.b.cfg.PublishByteRate, h.b.cfg.PublishByteBurst, n)
}

// take takes n tokens from the endpoint's limiter in limits (guarded by
// h.mu), made with rate r and burst on the endpoint's first publish.
func (h *hook) take(limits map[string]*rate.Limiter, ep string, r float64, burst, n int) bool {
	h.mu.Lock()
	l, ok := limits[ep]
	if !ok {
		l = rate.NewLimiter(rate.Limit(r), burst)
		limits[ep] = l
	}
	h.mu.Unlock()
	return l.AllowN(h.b.cfg.Clock.Now(), n)
}

// OnPacketEncode shows a device its own topics without the mount prefix.
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return pk
	}
	if ep, ok := h.endpoint(cl); ok {
		if t, in := unmount(ep, pk.TopicName); in {
			pk.TopicName = t
		}
	}
	return pk
}

// OnWill mounts the will topic (checked at CONNECT) into the namespace.
func (h *hook) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	if ep, ok := h.endpoint(cl); ok {
		will.TopicName = mount(ep, will.TopicName)
	}
	return will, nil
}

// OnWillSent relays a device's last will upstream, so the central side
// learns that the device went away ungracefully.
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	ep, ok := h.endpoint(cl)
	if !ok || h.b.cfg.Upstream == nil {
		return
	}
	if h.revokedClient(cl) {
		h.b.stats.RevokedPublishes.Add(1)
		return
	}
	t, in := unmount(ep, pk.TopicName)
	if !in {
		return
	}
	m := Message{Topic: t, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain, Will: true}
	if err := h.b.cfg.Upstream.Publish(ep, m); err != nil {
		h.b.stats.UpstreamRefused.Add(1)
		h.b.warn("mqtt will refused by upstream", "endpoint", ep, "err", err)
		return
	}
	h.b.stats.Upstream.Add(1)
}

// rateLimiter lets one warning through per interval (a flood of bad
// CONNECTs must not flood the log); suppressed lines are counted.
type rateLimiter struct {
	mu         sync.Mutex
	last       time.Time
	interval   time.Duration
	suppressed int
}

func (r *rateLimiter) allow(now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last) < r.interval {
		r.suppressed++
		return false, 0
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	return true, n
}

func (b *Broker) warn(msg string, args ...any) {
	ok, n := b.warnRL.allow(b.cfg.Clock.Now())
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	b.log.Warn(msg, args...)
}
