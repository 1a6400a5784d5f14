package proxy

// Store-and-forward for device → central CoAP (issue 16). Each device
// request path has a mode (Config.Modes):
//
//   - ModeSpool (default for POST/PUT to the telemetry paths): the request
//     is appended durably to the CoAP spool (bridge/spool, fsynced before
//     the answer), the device gets 2.04 Changed at once, and the
//     endpoint's forwarder (forward.go) sends it to central later, in
//     order, from the endpoint's own address.
//   - ModePassthrough (everything else): the request goes upstream at
//     once; while the uplink is down, or when the exchange fails, the
//     device gets 5.03 Service Unavailable with Max-Age = RetryAfter (RFC
//     7252 section 5.9.3.4), never silence and never a closed session.
//
// Only requests to the central service are spooled (not Proxy-Uri ones),
// and only POST and PUT without Block1 (a block-wise upload is relayed).

import (
	"errors"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/bridge/spool"
)

// Mode is how device requests to a path reach central.
type Mode string

// Modes of Config.Modes.
const (
	ModeSpool       Mode = "spool"
	ModePassthrough Mode = "passthrough"
)

// DefaultTelemetryPath is spooled when Config.Modes is nil.
const DefaultTelemetryPath = "/telemetry"

// DefaultRetryAfter is the Max-Age of a passthrough 5.03.
const DefaultRetryAfter = 30 * time.Second

// modeOf returns the mode for a device request to path (the central
// service's; proxied requests are never spooled).
func (p *Proxy) modeOf(r *pool.Message, path string) Mode {
	if p.cfg.Spool == nil {
		return ModePassthrough
	}
	if c := r.Code(); c != codes.POST && c != codes.PUT {
		return ModePassthrough
	}
	if r.HasOption(message.Block1) {
		return ModePassthrough
	}
	return MatchMode(p.cfg.Modes, path)
}

// MatchMode returns the mode of path in modes: an exact key, else the
// longest key ending in "/*" whose prefix path starts with; passthrough
// if none.
func MatchMode(modes map[string]Mode, path string) Mode {
	if m, ok := modes[path]; ok {
		return m
	}
	best, mode := -1, ModePassthrough
	for k, m := range modes {
		pre, ok := strings.CutSuffix(k, "*")
		if ok && strings.HasPrefix(path, pre) && len(pre) > best {
			best, mode = len(pre), m
		}
	}
	return mode
}

// encodeSpooled returns the request as it is stored: a CoAP message for
// the next hop (code, options, Uri-Path, payload) without token or MID,
// which the forwarder assigns.
func encodeSpooled(r *pool.Message, path string) ([]byte, error) {
	m := pool.NewMessage(r.Context())
	copyRequest(m, r, path, nil)
	m.SetType(message.Confirmable)
	m.SetMessageID(0)
	return m.MarshalWithEncoder(coder.DefaultCoder)
}

// spoolDevice stores a device request and answers it: 2.04 once it is on
// disk; 5.03 with Max-Age when the endpoint's share or the spool is full
// or the disk failed (the device keeps the message and retries).
func (p *Proxy) spoolDevice(name string, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, path string) {
	b, err := encodeSpooled(r, path)
	if err == nil {
		_, err = p.cfg.Spool.Append(spool.Message{Endpoint: name, Topic: path, QoS: 1, Payload: b})
	}
	if err != nil {
		p.Stats.SpoolRefused.Add(1)
		if errors.Is(err, spool.ErrFull) {
			p.warnf("coap spool full, telemetry refused", "endpoint", name, "err", err.Error())
		} else {
			p.warnf("coap spool append failed", "endpoint", name, "err", err.Error())
		}
		p.unavailable(w)
		return
	}
	p.Stats.Spooled.Add(1)
	if e := p.endpoint(name); e != nil && e.fwd != nil {
		e.fwd.ensure()
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
}

// unavailable answers 5.03 with Max-Age = RetryAfter.
func (p *Proxy) unavailable(w *responsewriter.ResponseWriter[*udpclient.Conn]) {
	p.Stats.Unavailable.Add(1)
	secs := uint32(p.cfg.RetryAfter / time.Second)
	_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, nil, message.Option{ID: message.MaxAge, Value: uintOpt(secs)})
}

// uplinkUp reports the uplink state (always up without Config.UplinkUp).
func (p *Proxy) uplinkUp() bool {
	return p.cfg.UplinkUp == nil || p.cfg.UplinkUp()
}

// UplinkChanged tells the proxy the uplink came up or went down: when it
// comes up every forwarder sends its head message at once instead of
// waiting for its retransmission timer.
func (p *Proxy) UplinkChanged(up bool) {
	if !up {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.eps {
		if e.fwd != nil {
			e.fwd.kick()
		}
	}
}

// Spooled returns an endpoint's CoAP spool depth: messages and bytes.
func (p *Proxy) Spooled(name string) (int, int64) {
	if p.cfg.Spool == nil {
		return 0, 0
	}
	n, b, _ := p.cfg.Spool.Depth(name)
	return n, b
}
