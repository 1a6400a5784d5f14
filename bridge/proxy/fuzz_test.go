package proxy

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

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
		if n := e.ex.remembered(); n > r.px.cfg.DedupPerEndpoint {
			t.Fatalf("dedup table holds %d, bound %d", n, r.px.cfg.DedupPerEndpoint)
		}
	})
}

// FuzzUpstreamAnswer feeds datagrams from central to <endpoint>:UpstreamPort
// (the upstream table's demultiplexer) with one exchange in flight: piggybacked,
// separate (CON, then ACKed), NON answers, empty ACK, RST, garbage. It must never
// panic; the table holds at most the one exchange, and an answer ends it at
// most once.
func FuzzUpstreamAnswer(f *testing.F) {
	const tok, mid = uint64(0x0102030405060708), 0x4242
	tb := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	enc := func(typ message.Type, code codes.Code, m int32, t []byte, body string) []byte {
		r := pool.NewMessage(context.Background())
		r.SetType(typ)
		r.SetCode(code)
		r.SetMessageID(m)
		r.SetToken(t)
		if body != "" {
			r.SetBody(bytes.NewReader([]byte(body)))
			v, _ := blockwise.EncodeBlockOption(blockwise.SZX16, 0, true)
			r.SetOptionUint32(message.Block2, v)
		}
		b, _ := r.MarshalWithEncoder(coder.DefaultCoder)
		return b
	}
	f.Add(enc(message.Acknowledgement, codes.Changed, mid, tb, ""))
	f.Add(enc(message.Acknowledgement, codes.Content, mid, tb, "0123456789abcdef"))
	f.Add(enc(message.Acknowledgement, codes.Empty, mid, nil, ""))
	f.Add(enc(message.Reset, codes.Empty, mid, nil, ""))
	f.Add(enc(message.Confirmable, codes.Changed, 7, tb, ""))
	f.Add(enc(message.NonConfirmable, codes.Changed, 8, tb, ""))
	f.Add(enc(message.Confirmable, codes.GET, 9, tb, ""))
	f.Add(enc(message.Acknowledgement, codes.Changed, mid, []byte{1, 2, 3}, ""))
	f.Add([]byte{0x60, 0x44, 0x42})
	f.Add([]byte{})

	r := newRig(f, nil)
	e := r.px.endpoint("sensor-17")
	central := r.px.cfg.Central
	dst := netip.AddrPortFrom(e.ep.Addr, UpstreamPort)
	f.Fuzz(func(t *testing.T, b []byte) {
		x := &upEx{e: e, key: upKey{e.ep.Addr, tok}, mid: mid, src: dst, dst: central, done: make(chan upResult, 1), next: r.px.now().Add(time.Hour)}
		t.Cleanup(func() { r.px.up.remove(x) })
		r.px.up.mu.Lock()
		r.px.up.byTok[x.key] = x
		r.px.up.byMID[upMIDKey{e.ep.Addr, mid}] = x
		r.px.up.mu.Unlock()
		r.px.demuxUp(central, dst, b)
		if n := r.px.up.inFlightUp(); n > 1 {
			t.Fatalf("%d exchanges in the table, want ≤ 1", n)
		}
		select {
		case <-x.done:
			if r.px.up.inFlightUp() != 0 {
				t.Fatal("an ended exchange stayed in the table")
			}
		default:
		}
	})
}
