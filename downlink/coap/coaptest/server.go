package coaptest

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Serve is a plain-UDP CoAP peer for tests (a central application, a
// scripted upstream): every message read from pc that decodes is handed to
// handle, and what handle returns is written back to the sender, one
// datagram per element (nil: no answer, e.g. a lost request). It runs until
// pc is closed; t's cleanup closes pc and waits for the reader to end.
func Serve(t testing.TB, pc net.PacketConn, handle func(m *pool.Message, from net.Addr) [][]byte) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := pool.NewMessage(context.Background())
			if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
				continue
			}
			for _, b := range handle(m, from) {
				_, _ = pc.WriteTo(b, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
}

// Reply encodes the piggybacked response to request m: an ACK with m's
// message ID and token (a NON answer to a NON request), code, and body as
// text/plain when body is not nil.
func Reply(m *pool.Message, code codes.Code, body []byte) [][]byte {
	r := pool.NewMessage(context.Background())
	r.SetType(message.Acknowledgement)
	if m.Type() == message.NonConfirmable {
		r.SetType(message.NonConfirmable)
	}
	r.SetMessageID(m.MessageID())
	r.SetToken(m.Token())
	r.SetCode(code)
	if body != nil {
		r.SetContentFormat(message.TextPlain)
		r.SetBody(bytes.NewReader(body))
	}
	b, err := r.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return nil
	}
	return [][]byte{b}
}

// IsRequest reports whether c is a request method code (class 0, not
// Empty).
func IsRequest(c codes.Code) bool { return c != codes.Empty && c>>5 == 0 }

// SourceEcho answers every request with 2.05 "src=<sender address>", the
// central application of the tests that check which address a relayed
// request left from.
func SourceEcho(m *pool.Message, from net.Addr) [][]byte {
	if !IsRequest(m.Code()) {
		return nil
	}
	return Reply(m, codes.Content, []byte("src="+from.String()))
}
