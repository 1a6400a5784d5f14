package proxy

import (
	"bytes"
	"context"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// centralReq is a central CON request as demux decodes it.
func centralReq(mid int32, code codes.Code, opts func(*pool.Message)) *pool.Message {
	m := pool.NewMessage(context.Background())
	m.SetType(message.Confirmable)
	m.SetCode(code)
	m.SetMessageID(mid)
	m.SetToken(message.Token("tk"))
	_ = m.SetPath("/r")
	if opts != nil {
		opts(m)
	}
	return m
}

// The central → device stages return their answers and write nothing: only
// the intake's writeAnswer does (item 6 of issue 19). Each stage is called
// directly; a marker answer written afterwards must be the first datagram
// central receives, so any write by a stage would show up before it.
func TestStagesReturnAnswers(t *testing.T) {
	r := newRig(t, nil) // no device: its session is absent
	rc := r.rawCentral(t)
	e := r.px.endpoint("sensor-17")
	if e == nil {
		t.Fatal("no endpoint state for sensor-17")
	}
	from := rc.nc.LocalAddr()
	p := r.px

	// block.go: a bad Block1 size, then a two-block upload.
	bad, _ := blockwise.EncodeBlockOption(blockwise.SZXBERT, 0, true)
	if a, done := p.blockIn(e, centralReq(1, codes.PUT, func(m *pool.Message) { m.SetOptionUint32(message.Block1, bad) }), from); !done || a.c.code != codes.BadOption {
		t.Fatalf("bad Block1: done %v code %v, want 4.02", done, a.c.code)
	}
	b0, _ := blockwise.EncodeBlockOption(blockwise.SZX16, 0, true)
	first := centralReq(2, codes.PUT, func(m *pool.Message) {
		m.SetOptionUint32(message.Block1, b0)
		m.SetBody(bytes.NewReader(bytes.Repeat([]byte("a"), 16)))
	})
	if a, done := p.blockIn(e, first, from); !done || a.c.code != codes.Continue {
		t.Fatalf("block 0: done %v code %v, want 2.31", done, a.c.code)
	}
	b1, _ := blockwise.EncodeBlockOption(blockwise.SZX16, 1, false)
	last := centralReq(3, codes.PUT, func(m *pool.Message) {
		m.SetOptionUint32(message.Block1, b1)
		m.SetBody(bytes.NewReader([]byte("bb")))
	})
	if _, done := p.blockIn(e, last, from); done {
		t.Fatal("last block answered by the block stage, want it passed on to the device")
	}
	if got := readBody(last); string(got) != string(bytes.Repeat([]byte("a"), 16))+"bb" {
		t.Fatalf("reassembled body %q", got)
	}
	// relay.go and observe.go (no session), exchange.go's overload verdict.
	if a := p.relay(e, centralReq(4, codes.GET, nil)); a.c.code != codes.GatewayTimeout {
		t.Fatalf("relay without session: %v, want 5.04", a.c.code)
	}
	obsReq := centralReq(5, codes.GET, func(m *pool.Message) { m.SetObserve(0) })
	if a := p.toDevice(e, obsReq, from); a.c.code != codes.GatewayTimeout || a.hasObs {
		t.Fatalf("observe without session: %v observe %v, want 5.04 without Observe", a.c.code, a.hasObs)
	}
	if a := p.overloadCentral(e, from); a.c.code != codes.ServiceUnavailable || len(a.c.opts) != 1 || a.c.opts[0].ID != message.MaxAge {
		t.Fatalf("overload answer %v %v, want 5.03 with Max-Age", a.c.code, a.c.opts)
	}

	// The return path: a 40-byte body to a request with Block2 SZX16 goes
	// out as block 0 (the marker), is cached for the follow-ups, and is
	// recorded for a duplicate of the request.
	get := centralReq(6, codes.GET, func(m *pool.Message) { m.SetOptionUint32(message.Block2, 0) })
	if _, done := p.dedupCentral(e, get, from); done {
		t.Fatal("first copy taken for a duplicate")
	}
	body := bytes.Repeat([]byte("0123456789"), 4)
	p.writeAnswer(e, get, from, answer{c: content{code: codes.Content, body: body}})
	m := rc.recv(t)
	if m.Code() != codes.Content || m.MessageID() != 6 {
		t.Fatalf("first datagram at central: %v mid %d, want the marker 2.05 mid 6 (a stage wrote?)", m.Code(), m.MessageID())
	}
	v, err := m.GetOptionUint32(message.Block2)
	if szx, num, more, _ := blockwise.DecodeBlockOption(v); err != nil || szx != blockwise.SZX16 || num != 0 || !more {
		t.Fatalf("marker Block2 %v (%v): want block 0 of SZX16 with more", v, err)
	}
	resend, done := p.dedupCentral(e, get, from)
	if !done || !bytes.Equal(resend, wire(t, m)) {
		t.Fatalf("duplicate: done %v, recorded %x, sent %x", done, resend, wire(t, m))
	}
	f2, _ := blockwise.EncodeBlockOption(blockwise.SZX16, 2, false)
	follow := centralReq(7, codes.GET, func(m *pool.Message) { m.SetOptionUint32(message.Block2, f2) })
	a, done := p.blockCached(e, follow, from)
	if !done || !bytes.Equal(a.c.body, body) {
		t.Fatalf("follow-up: done %v body %q, want the cached body", done, a.c.body)
	}
	p.writeAnswer(e, follow, from, a)
	if m := rc.recv(t); m.MessageID() != 7 || string(readBody(m)) != "23456789" {
		t.Fatalf("block 2: mid %d body %q", m.MessageID(), readBody(m))
	}
}
