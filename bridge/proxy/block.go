package proxy

import (
	"bytes"
	"net"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// Block-wise transfers (RFC 7959) on the central side of an endpoint
// address, where the proxy speaks raw CoAP datagrams: a response (or
// notification) larger than one block goes out as Block2 block 0 with the
// whole body kept for the follow-ups; a Block1 upload is reassembled
// (2.31 Continue per block) and relayed to the device as one request,
// which go-coap splits again on the DTLS session if the device needs it.

// Defaults for the block-wise fields of Config.
const (
	DefaultBlockSZX     = blockwise.SZX1024
	DefaultMaxBody      = 64 << 10
	DefaultBlockTimeout = time.Minute
	// maxTransfers bounds the uploads and cached bodies per endpoint.
	maxTransfers = 16
)

type cachedBody struct {
	c       content
	expires time.Time
}

type upload struct {
	body    []byte
	expires time.Time
}

// resourceKey names a transfer: the central peer and the resource.
func resourceKey(from net.Addr, m *pool.Message) string {
	path, _ := m.Path()
	q, _ := m.Queries()
	return from.String() + " " + path + "?" + strings.Join(q, "&")
}

// blockIn handles a request carrying Block1. It returns the answer and
// true when the request ends here (2.31 Continue or an error); false means
// msg now holds the whole body (its Block1 option is echoed in the
// response) and goes on to the device.
func (p *Proxy) blockIn(e *endpointState, msg *pool.Message, from net.Addr) (answer, bool) {
	v, err := msg.GetOptionUint32(message.Block1)
	if err != nil {
		return answer{}, false
	}
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil || szx > blockwise.SZX1024 {
		p.Stats.BlockErrors.Add(1)
		return answer{c: content{code: codes.BadOption}}, true
	}
	key := resourceKey(from, msg)
	body := readBody(msg)
	e.mu.Lock()
	u := e.uploads[key]
	if num == 0 {
		if u == nil && len(e.uploads) >= maxTransfers {
			e.mu.Unlock()
			p.Stats.BlockErrors.Add(1)
			return answer{c: content{code: codes.ServiceUnavailable}}, true
		}
		u = &upload{}
		e.uploads[key] = u
	}
	if u == nil || int64(len(u.body)) != num*szx.Size() {
		delete(e.uploads, key)
		e.mu.Unlock()
		p.Stats.BlockErrors.Add(1)
		return answer{c: content{code: codes.RequestEntityIncomplete}}, true
	}
	if len(u.body)+len(body) > p.cfg.MaxBody {
		delete(e.uploads, key)
		e.mu.Unlock()
		p.Stats.BlockErrors.Add(1)
		p.warnf("block-wise upload too large", "endpoint", e.ep.Name, "peer", from.String())
		return answer{c: content{code: codes.RequestEntityTooLarge, opts: message.Options{{ID: message.Size1, Value: uintOpt(uint32(p.cfg.MaxBody))}}}}, true
	}
	u.body = append(u.body, body...)
	u.expires = time.Now().Add(p.cfg.BlockTimeout)
	if more {
		e.mu.Unlock()
		return answer{c: content{code: codes.Continue}}, true
	}
	delete(e.uploads, key)
	e.mu.Unlock()
	p.Stats.BlockUploads.Add(1)
	msg.SetBody(bytes.NewReader(u.body))
	return answer{}, false
}

// blockCached answers a Block2 follow-up (block number > 0) from the body
// kept when block 0 went out (answer.go's encodeBlocked cuts the block).
// It returns false on a miss: the request is then relayed and the block
// cut from the fresh body.
func (p *Proxy) blockCached(e *endpointState, msg *pool.Message, from net.Addr) (answer, bool) {
	v, err := msg.GetOptionUint32(message.Block2)
	if err != nil {
		return answer{}, false
	}
	_, num, _, err := blockwise.DecodeBlockOption(v)
	if err != nil || num == 0 {
		return answer{}, false
	}
	e.mu.Lock()
	cb, ok := e.bodies[resourceKey(from, msg)]
	e.mu.Unlock()
	if !ok {
		return answer{}, false
	}
	return answer{c: cb.c}, true
}

// uintOpt encodes a uint option value (RFC 7252 section 3.2).
func uintOpt(v uint32) []byte {
	var b [4]byte
	n, _ := message.EncodeUint32(b[:], v)
	return append([]byte(nil), b[:n]...)
}

// expireBlocks drops transfers idle for BlockTimeout.
func (e *endpointState) expireBlocks(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, u := range e.uploads {
		if now.After(u.expires) {
			delete(e.uploads, k)
		}
	}
	for k, b := range e.bodies {
		if now.After(b.expires) {
			delete(e.bodies, k)
		}
	}
}
