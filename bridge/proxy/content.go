package proxy

import (
	"bytes"
	"context"
	"net"
	"net/netip"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// content is a response's code, end-to-end options and body, copied out of
// a pooled go-coap message (which is reused once its handler returns).
type content struct {
	code  codes.Code
	cf    message.MediaType
	hasCF bool
	opts  message.Options // end-to-end options, values owned
	body  []byte
}

// contentOf copies what a proxy forwards from m (RFC 7252 section 5.7.2:
// hop-by-hop options such as Block1/2, Size1/2 and Observe are dropped).
func contentOf(m *pool.Message) content {
	c := content{code: m.Code()}
	if cf, err := m.ContentFormat(); err == nil {
		c.cf, c.hasCF = cf, true
	}
	for _, o := range m.Options() {
		if skipOpts[o.ID] || o.ID == message.ContentFormat {
			continue
		}
		c.opts = append(c.opts, message.Option{ID: o.ID, Value: append([]byte(nil), o.Value...)})
	}
	c.body = readBody(m)
	return c
}

// final reports a response that ends an observation (RFC 7641 section
// 3.2: a notification without Observe, or any non-2.xx code).
func (c content) final(hasObserve bool) bool { return !hasObserve || c.code>>5 != 2 }

// centralMsg is one message to a central peer, encoded by encode.
type centralMsg struct {
	typ   message.Type
	mid   int32
	token message.Token
	c     content
	// observe is the Observe value when hasObs.
	observe uint32
	hasObs  bool
	// block1 is echoed when hasBlock1 (RFC 7959 section 2.3); block2 and
	// size2 describe the slice of c.body carried when hasBlock2.
	block1, block2       uint32
	hasBlock1, hasBlock2 bool
	size2                uint32
}

func (m centralMsg) encode(body []byte) ([]byte, error) {
	r := pool.NewMessage(context.Background())
	r.SetType(m.typ)
	r.SetMessageID(m.mid)
	r.SetToken(m.token)
	r.SetCode(m.c.code)
	if m.c.hasCF {
		r.SetContentFormat(m.c.cf)
	}
	for _, o := range m.c.opts {
		r.AddOptionBytes(o.ID, o.Value)
	}
	if m.hasObs {
		r.SetObserve(m.observe)
	}
	if m.hasBlock1 {
		r.SetOptionUint32(message.Block1, m.block1)
	}
	if m.hasBlock2 {
		r.SetOptionUint32(message.Block2, m.block2)
		r.SetOptionUint32(message.Size2, m.size2)
	}
	if len(body) > 0 {
		r.SetBody(bytes.NewReader(body))
	}
	return r.MarshalWithEncoder(coder.DefaultCoder)
}

// write sends m to a central peer from the endpoint's address:<CoAP port>
// (no socket: ipstack builds the datagram). Nothing is sent once the
// endpoint was removed.
func (e *endpointState) write(b []byte, to net.Addr) {
	ua, ok := to.(*net.UDPAddr)
	if !ok || e.gone.Load() {
		return
	}
	_ = e.st.WriteUDP(netip.AddrPortFrom(srcFor(e.ep, ua.AddrPort().Addr()), coapPort), ua.AddrPort(), b)
}
