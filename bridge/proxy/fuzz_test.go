package proxy

import (
	"context"
	"net"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// FuzzCentralDatagram feeds datagrams from central to an endpoint address
// (no device session: requests queue) through the proxy's handling:
// Block1 reassembly, Block2 follow-ups, observe registration and
// cancellation, ACK/RST. It must never panic, and per-endpoint state stays
// within its bounds.
func FuzzCentralDatagram(f *testing.F) {
	enc := func(typ message.Type, code codes.Code, mid int32, tok string, set func(m *pool.Message)) []byte {
		m := pool.NewMessage(context.Background())
		m.SetType(typ)
		m.SetCode(code)
		m.SetMessageID(mid)
		m.SetToken(message.Token(tok))
		_ = m.SetPath("/obs")
		if set != nil {
			set(m)
		}
		b, _ := m.MarshalWithEncoder(coder.DefaultCoder)
		return b
	}
	blk := func(id message.OptionID, szx blockwise.SZX, num int64, more bool) func(*pool.Message) {
		return func(m *pool.Message) {
			v, _ := blockwise.EncodeBlockOption(szx, num, more)
			m.SetOptionUint32(id, v)
		}
	}
	f.Add(enc(message.Confirmable, codes.GET, 1, "t1", func(m *pool.Message) { m.SetObserve(0) }))
	f.Add(enc(message.Confirmable, codes.GET, 2, "t1", func(m *pool.Message) { m.SetObserve(1) }))
	f.Add(enc(message.Confirmable, codes.POST, 3, "t2", blk(message.Block1, blockwise.SZX16, 0, true)))
	f.Add(enc(message.Confirmable, codes.POST, 4, "t2", blk(message.Block1, blockwise.SZX16, 5, true)))
	f.Add(enc(message.Confirmable, codes.GET, 5, "t3", blk(message.Block2, blockwise.SZX64, 1<<19, false)))
	f.Add(enc(message.Confirmable, codes.GET, 6, "t4", blk(message.Block2, blockwise.SZXBERT, 0, false)))
	f.Add(enc(message.Reset, codes.Empty, 7, "", nil))
	f.Add(enc(message.Acknowledgement, codes.Empty, 8, "", nil))
	f.Add([]byte{0x40, 0x01, 0x00})
	f.Add([]byte{})

	r := newRig(f, nil)
	e := r.px.endpoint("sensor-17")
	from := &net.UDPAddr{IP: net.IPv4(10, 20, 0, 1), Port: 40000}
	f.Fuzz(func(t *testing.T, b []byte) {
		r.px.handleDown(e, b, from)
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.queue) > r.px.cfg.QueueLen || len(e.uploads) > maxTransfers || len(e.bodies) > maxTransfers || len(e.down) > r.px.cfg.MaxObservations {
			t.Fatalf("bounds exceeded: queue %d uploads %d bodies %d observations %d", len(e.queue), len(e.uploads), len(e.bodies), len(e.down))
		}
	})
}
