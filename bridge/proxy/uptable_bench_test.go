package proxy

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// BenchmarkUpExchange is one plain device → central request through the
// exchange table and the stack, central answering piggybacked 2.04 (the
// per-request cost of the relay's upstream side; allocations per request
// are the figure to watch).
func BenchmarkUpExchange(b *testing.B) {
	r := newRig(b, nil)
	pc, err := r.pair.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		var ob [16]message.Option
		out := make([]byte, 256)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := message.Message{Options: ob[:0]}
			if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
				continue
			}
			a := message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: m.Token}
			if k, err := coder.DefaultCoder.Encode(a, out); err == nil {
				_, _ = pc.WriteTo(out[:k], from)
			}
		}
	}()
	e := r.px.endpoint("sensor-17")
	req := pool.NewMessage(context.Background())
	req.SetType(message.Confirmable)
	req.SetCode(codes.PUT)
	req.SetMessageID(1)
	req.SetToken(message.Token("dev"))
	_ = req.SetPath("/telemetry")
	payload := bytes.Repeat([]byte("x"), 64)
	dst := netip.MustParseAddrPort("10.20.0.1:5683")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.SetBody(bytes.NewReader(payload))
		c, err := r.px.upExchange(ctx, e, dst, req, "/telemetry", nil)
		if err != nil || c.code != codes.Changed {
			b.Fatalf("request %d: %v %v", i, c.code, err)
		}
	}
}
