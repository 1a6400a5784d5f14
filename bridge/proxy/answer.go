package proxy

// The return path, central side: the ONE place an answer to a central
// request is written. The stages between the demultiplexer and the device
// (exchange.go, block.go, observe.go, relay.go) never write: each returns
// an answer value to its caller, the intake (demux.go handleDown, or
// queue.go for what waited for a sleeping device), and the intake hands it
// to writeAnswer, which
//
//   - builds the message: piggybacked in the ACK for a CON still
//     unacknowledged, else a NON with the request's token; Observe when the
//     answer carries one; the request's Block1 echoed (RFC 7959 section 2.3);
//   - cuts Block2 when the body is larger than one block (encodeBlocked),
//     keeping the whole body in the endpoint's body cache, which block.go
//     reads when the follow-ups arrive;
//   - records the bytes for duplicates of the request (the exchange
//     stage's table: a retransmitted CON gets the very same bytes);
//   - sends them from the endpoint's address, then calls the answer's sent
//     hook if it has one (observe.go holds a registration's later
//     notifications until its first answer left).
//
// Notifications after an observation's first answer are new messages, not
// answers: observe.go encodes them with encodeBlocked and sends them itself.

import (
	"net"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// answer is what a stage returns for a central request.
type answer struct {
	c content
	// obs is the Observe value when hasObs (an observation's first answer).
	obs    uint32
	hasObs bool
	// sent, if not nil, is called once the answer was written (or could
	// not be encoded).
	sent func()
}

// codeAnswer is an answer with a code and no body.
func codeAnswer(code codes.Code, opts ...message.Option) answer {
	return answer{c: content{code: code, opts: opts}}
}

// responseAnswer is the answer carrying a device's response (code, the
// end-to-end options and the body copied out of the pooled message).
func responseAnswer(resp *pool.Message) answer {
	return answer{c: contentOf(resp)}
}

// writeAnswer writes a to the central request req from peer to.
func (p *Proxy) writeAnswer(e *endpointState, req *pool.Message, to net.Addr, a answer) {
	if a.sent != nil {
		defer a.sent()
	}
	m := centralMsg{typ: message.NonConfirmable, mid: message.GetMID(), token: req.Token(), c: a.c}
	if req.Type() == message.Confirmable {
		m.typ, m.mid = message.Acknowledgement, req.MessageID()
	}
	if a.hasObs {
		m.observe, m.hasObs = a.obs, true
	}
	if v, err := req.GetOptionUint32(message.Block1); err == nil {
		m.block1, m.hasBlock1 = v, true
	}
	v2, err := req.GetOptionUint32(message.Block2)
	b := p.encodeBlocked(e, m, v2, err == nil, resourceKey(to, req))
	if b == nil {
		return
	}
	if k, ok := keyOf(to, req); ok {
		e.ex.answered(k, b)
	}
	e.write(b, to)
}

// encodeBlocked encodes m for a central peer, as Block2 when its body is
// larger than one block (szx from the request's Block2 if smaller than
// ours), caching the body under key for the follow-ups. It returns nil if
// m cannot be encoded.
func (p *Proxy) encodeBlocked(e *endpointState, m centralMsg, reqBlock2 uint32, hasReqBlock2 bool, key string) []byte {
	szx, num := p.cfg.BlockSZX, int64(0)
	if hasReqBlock2 {
		if s, n, _, err := blockwise.DecodeBlockOption(reqBlock2); err == nil {
			if s < szx {
				szx = s
			}
			num = n
		}
	}
	size := szx.Size()
	body := m.c.body
	if num == 0 && int64(len(body)) <= size {
		b, _ := m.encode(body)
		return b
	}
	off := num * size
	if off >= int64(len(body)) {
		m.c = content{code: codes.BadOption}
		m.hasObs = false
		b, _ := m.encode(nil)
		return b
	}
	end := min(off+size, int64(len(body)))
	more := end < int64(len(body))
	bv, _ := blockwise.EncodeBlockOption(szx, num, more)
	m.block2, m.hasBlock2, m.size2 = bv, true, uint32(len(body))
	if num == 0 && more {
		e.mu.Lock()
		if _, ok := e.bodies[key]; ok || len(e.bodies) < maxTransfers {
			e.bodies[key] = cachedBody{c: m.c, expires: time.Now().Add(p.cfg.BlockTimeout)}
		}
		e.mu.Unlock()
		p.Stats.BlockDownloads.Add(1)
	}
	b, _ := m.encode(body[off:end])
	return b
}
