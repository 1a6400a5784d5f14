package collector

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// Datagram sink limits.
const (
	// maxDatagram is the largest CoAP datagram read (RFC 7252 §4.6 allows
	// up to the IP MTU; 64 KiB covers any UDP payload).
	maxDatagram = 65535
	// exchangeLifetime is how long a CON response is kept to answer
	// retransmissions (RFC 7252 §4.8.2 EXCHANGE_LIFETIME, 247 s).
	exchangeLifetime = 247 * time.Second
	// maxCached bounds the deduplication cache.
	maxCached = 65536
	// maxOptions bounds the options decoded from one request.
	maxOptions = 32
)

// DatagramSink answers CoAP telemetry datagrams without go-coap's socket
// layer, so that it runs over any net.PacketConn — notably a gVisor
// netstack gonet.UDPConn holding a central VPN address, which go-coap's UDP
// server cannot take. It deduplicates CON retransmissions by peer and
// Message ID (RFC 7252 §4.5) and piggybacks the response on the ACK.
type DatagramSink struct {
	c *Collector

	mu    sync.Mutex // guards cache
	cache map[dedupKey]cached
}

type dedupKey struct {
	peer string
	mid  int32
}

type cached struct {
	resp    []byte
	expires time.Time
}

// NewDatagramSink returns a sink feeding c.
func (c *Collector) NewDatagramSink() *DatagramSink {
	return &DatagramSink{c: c, cache: map[dedupKey]cached{}}
}

// Handle processes one datagram from peer and returns the response
// datagram to send back (nil: send nothing). It never panics on bad input:
// malformed datagrams are counted and get no response (RFC 7252 §4.2
// allows a Reset; silence is also allowed for NON and safer here).
func (s *DatagramSink) Handle(peer string, b []byte) []byte {
	// The coder decodes options into a caller-provided slice.
	req := message.Message{Options: make(message.Options, 0, maxOptions)}
	if _, err := coder.DefaultCoder.Decode(b, &req); err != nil {
		s.c.malformed("coap", peer, err)
		return nil
	}
	if req.Type != message.Confirmable && req.Type != message.NonConfirmable || req.Code == codes.Empty || req.Code >= codes.Created {
		if req.Type == message.Confirmable && req.Code == codes.Empty {
			// CoAP ping (RFC 7252 §4.3): answer with Reset.
			return encode(message.Message{Type: message.Reset, MessageID: req.MessageID})
		}
		return nil
	}
	now := s.c.now()
	key := dedupKey{peer, req.MessageID}
	if req.Type == message.Confirmable {
		s.mu.Lock()
		if e, ok := s.cache[key]; ok && now.Before(e.expires) {
			s.mu.Unlock()
			return e.resp // retransmission: same answer, not counted again
		}
		s.mu.Unlock()
	}
	code := s.respond(peer, &req)
	resp := message.Message{Token: req.Token, Code: code, MessageID: req.MessageID, Type: message.Acknowledgement}
	if req.Type == message.NonConfirmable {
		resp.Type = message.NonConfirmable
		resp.MessageID = int32(s.c.nextMID())
	}
	out := encode(resp)
	if req.Type == message.Confirmable && out != nil {
		s.mu.Lock()
		if len(s.cache) >= maxCached {
			for k, e := range s.cache {
				if !now.Before(e.expires) {
					delete(s.cache, k)
				}
			}
			if len(s.cache) >= maxCached {
				s.cache = map[dedupKey]cached{}
			}
		}
		s.cache[key] = cached{resp: out, expires: now.Add(exchangeLifetime)}
		s.mu.Unlock()
	}
	return out
}

// respond decides the response code for one request (same rules as
// CoAPHandler).
func (s *DatagramSink) respond(peer string, req *message.Message) codes.Code {
	if req.Code != codes.POST && req.Code != codes.PUT {
		return codes.MethodNotAllowed
	}
	f := senml.FormatJSON
	if cf, err := req.Options.ContentFormat(); err == nil {
		ff, err := senml.FormatFromContentFormat(uint16(cf))
		if err != nil {
			s.c.malformed("coap", peer, err)
			return codes.UnsupportedMediaType
		}
		f = ff
	}
	if _, err := s.c.Handle("coap", peer, req.Payload, f); err != nil {
		return codes.BadRequest
	}
	return codes.Changed
}

func encode(m message.Message) []byte {
	buf := make([]byte, 64+len(m.Token))
	n, err := coder.DefaultCoder.Encode(m, buf)
	if errors.Is(err, message.ErrTooSmall) {
		buf = make([]byte, n)
		n, err = coder.DefaultCoder.Encode(m, buf)
	}
	if err != nil {
		return nil
	}
	return buf[:n]
}

// Serve reads datagrams from pc and answers them until ctx ends or pc
// fails. It closes pc when ctx ends.
func (s *DatagramSink) Serve(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { _ = pc.Close() })
	defer stop()
	buf := make([]byte, maxDatagram)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if resp := s.Handle(addr.String(), buf[:n]); resp != nil {
			_, _ = pc.WriteTo(resp, addr)
		}
	}
}
