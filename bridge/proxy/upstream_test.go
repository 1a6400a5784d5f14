package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapclient "github.com/plgd-dev/go-coap/v3/net/client"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// lossyCentral is a CoAP responder on a loopback UDP socket that drops
// every request while down is set (an uplink outage) and otherwise
// answers 2.04 piggybacked; it records the tokens it saw.
type lossyCentral struct {
	pc     net.PacketConn
	down   atomic.Bool
	mu     sync.Mutex
	tokens []message.Token
}

func startLossyCentral(t *testing.T) *lossyCentral {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &lossyCentral{pc: pc}
	coaptest.Serve(t, pc, func(m *pool.Message, _ net.Addr) [][]byte {
		if !isRequest(m.Code()) || c.down.Load() {
			return nil
		}
		c.mu.Lock()
		c.tokens = append(c.tokens, append(message.Token(nil), m.Token()...))
		c.mu.Unlock()
		return coaptest.Reply(m, codes.Changed, nil)
	})
	return c
}

func (c *lossyCentral) addr() netip.AddrPort {
	return c.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func dialLoopback(dst netip.AddrPort) (net.Conn, error) {
	return net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
}

func newTestClient(nc net.Conn) *udpclient.Conn {
	return newCoAPClient(context.Background(), nc, nil)
}

// deviceRequest is a POST as a device sends it, with the given token
// (zero-length allowed).
func deviceRequest(tok message.Token) *pool.Message {
	r := pool.NewMessage(context.Background())
	r.SetCode(codes.POST)
	r.SetType(message.Confirmable)
	r.SetToken(tok)
	_ = r.SetPath("/telemetry")
	r.SetContentFormat(message.AppJSON)
	r.SetBody(bytes.NewReader([]byte(`{"seq":1}`)))
	return r
}

// TestTokenlessGuardPoisonsConn pins the go-coap behaviour behind issue
// 16: once a tokenless request failed (no answer during an outage), every
// later tokenless request on the same conn fails at once, even with
// central back. The proxy used to send device requests like that.
func TestTokenlessGuardPoisonsConn(t *testing.T) {
	central := startLossyCentral(t)
	nc, err := dialLoopback(central.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(nc)
	defer c.Close()
	send := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req := c.AcquireMessage(ctx)
		defer c.ReleaseMessage(req)
		copyRequest(req, deviceRequest(nil), "/telemetry", nil)
		resp, err := c.Do(req)
		if err == nil {
			c.ReleaseMessage(resp)
		}
		return err
	}
	central.down.Store(true)
	if err := send(300 * time.Millisecond); err == nil {
		t.Fatal("request during the outage succeeded")
	}
	central.down.Store(false)
	err = send(5 * time.Second)
	if !errors.Is(err, coapclient.ErrTokenlessRequestsBlocked) {
		t.Fatalf("tokenless request after a failed one: %v, want ErrTokenlessRequestsBlocked (go-coap changed; revisit upstream.go)", err)
	}
}

// TestUpstreamRecoversZeroLengthToken: device requests with a zero-length
// token and with an 8-byte token fail during an outage and succeed on the
// same destination as soon as central answers again; central never sees
// the device's token (always a fresh 8-byte one of the proxy's).
func TestUpstreamRecoversZeroLengthToken(t *testing.T) {
	central := startLossyCentral(t)
	u := newUpstreams(dialLoopback, newTestClient, nil)
	defer u.close()
	dst := central.addr()
	devTok := message.Token{1, 2, 3, 4, 5, 6, 7, 8}
	for _, tok := range []message.Token{nil, devTok} {
		central.down.Store(true)
		for i := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := u.exchange(ctx, dst, deviceRequest(tok), "/telemetry", nil)
			cancel()
			if err == nil {
				t.Fatalf("token %x: request %d during the outage succeeded", tok, i)
			}
		}
		central.down.Store(false)
		for i := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := u.exchange(ctx, dst, deviceRequest(tok), "/telemetry", nil)
			cancel()
			if err != nil || c.code != codes.Changed {
				t.Fatalf("token %x: request %d after the outage: %v %v", tok, i, c.code, err)
			}
		}
	}
	central.mu.Lock()
	defer central.mu.Unlock()
	if len(central.tokens) != 6 {
		t.Fatalf("central saw %d requests, want 6", len(central.tokens))
	}
	seen := map[string]bool{}
	for _, tok := range central.tokens {
		if len(tok) != 8 || bytes.Equal(tok, devTok) || seen[string(tok)] {
			t.Fatalf("central saw token %x: want a fresh 8-byte proxy token per exchange", tok)
		}
		seen[string(tok)] = true
	}
}

// TestUpstreamReplacesClosedConn: a client closed underneath is replaced
// by the next exchange.
func TestUpstreamReplacesClosedConn(t *testing.T) {
	central := startLossyCentral(t)
	var replaced atomic.Uint64
	u := newUpstreams(dialLoopback, newTestClient, &replaced)
	defer u.close()
	dst := central.addr()
	c, err := u.get(dst)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	<-c.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := u.exchange(ctx, dst, deviceRequest(nil), "/telemetry", nil)
	if err != nil || got.code != codes.Changed {
		t.Fatalf("after the conn closed: %v %v", got.code, err)
	}
	if replaced.Load() != 1 {
		t.Fatalf("replaced = %d, want 1", replaced.Load())
	}
	if c2, _ := u.get(dst); c2 == c {
		t.Fatal("closed conn still in use")
	}
}
