package ppp_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// switchConn forwards to a pipe end until discard is set, then swallows
// writes, so the benchmark measures our encapsulation, not the pipe's copy.
type switchConn struct {
	*stacktest.PipeConn
	discard atomic.Bool
}

func (c *switchConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.discard.Load() {
		return len(b), nil
	}
	return c.PipeConn.WriteTo(b, a)
}

// BenchmarkDataPath measures L2TP data + PPP encapsulation (client
// WritePacket down to the transport's WriteTo) and decapsulation (LNS
// Endpoint.Input up to the packet handler) of a 1400-byte IPv4 packet,
// next to an AES-GCM seal of the same packet.
func BenchmarkDataPath(b *testing.B) {
	pipe := stacktest.NewPipe(stacktest.PipeConfig{})
	ca, cb := &switchConn{PipeConn: pipe.A}, &switchConn{PipeConn: pipe.B}
	clk := stacktest.NewClock()
	lns, _ := l2tp.Listen(cb, l2tp.Config{Clock: clk})
	b.Cleanup(func() { lns.Close() })
	var server atomic.Pointer[ppp.Conn]
	var srvSess atomic.Pointer[l2tp.Session]
	var delivered atomic.Uint64
	go func() {
		s, err := lns.Accept(context.Background())
		if err != nil {
			return
		}
		c := ppp.New(s, ppp.Config{Role: ppp.Server, Clock: clk, Authenticator: ppp.LocalUsers{"u": "p"},
			AssignAddress: func(context.Context, string) (ppp.Assignment, error) {
				return ppp.Assignment{Addr: netip.MustParseAddr("10.10.8.2")}, nil
			}, LocalAddr: netip.MustParseAddr("10.10.8.1")})
		c.SetPacketHandler(func([]byte) { delivered.Add(1) })
		s.SetFrameHandler(c.Input)
		srvSess.Store(s)
		server.Store(c)
	}()
	var tun atomic.Pointer[l2tp.Tunnel]
	go func() {
		t, err := l2tp.Dial(context.Background(), ca, stacktest.Addr("b"), l2tp.Config{Clock: clk})
		if err == nil {
			tun.Store(t)
		}
	}()
	drive(b, clk, "tunnel", func() bool { return tun.Load() != nil })
	b.Cleanup(func() { tun.Load().Close() })
	var sess atomic.Pointer[l2tp.Session]
	go func() {
		s, err := tun.Load().OpenSession(context.Background())
		if err == nil {
			sess.Store(s)
		}
	}()
	drive(b, clk, "session", func() bool { return sess.Load() != nil })
	client := ppp.New(sess.Load(), ppp.Config{Role: ppp.Client, Clock: clk, Username: "u", Password: "p"})
	sess.Load().SetFrameHandler(client.Input)
	drive(b, clk, "IPCP", func() bool { c := server.Load(); return c != nil && closed(c.Up())() && closed(client.Up())() })
	b.Cleanup(func() {
		ca.discard.Store(false)
		cb.discard.Store(false)
		client.LowerDown()
		server.Load().LowerDown()
	})

	pkt := pkttest.Tagged(netip.MustParseAddr("10.10.8.2"), netip.MustParseAddr("10.10.8.1"), 1, 1400)
	b.Run("encap-l2tp-ppp-1400", func(b *testing.B) {
		ca.discard.Store(true)
		b.ReportAllocs()
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			if err := client.WritePacket(pkt); err != nil {
				b.Fatal(err)
			}
		}
		ca.discard.Store(false)
	})
	b.Run("decap-l2tp-ppp-1400", func(b *testing.B) {
		ss := srvSess.Load()
		dgram := make([]byte, 0, 1500)
		dgram = binary.BigEndian.AppendUint16(dgram, 0x0002)
		dgram = binary.BigEndian.AppendUint16(dgram, ss.Tunnel().LocalID())
		dgram = binary.BigEndian.AppendUint16(dgram, ss.LocalID())
		dgram = append(dgram, 0xff, 0x03, 0x00, 0x21)
		dgram = append(dgram, pkt...)
		from := net.Addr(stacktest.Addr("a"))
		before := delivered.Load()
		b.ReportAllocs()
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			lns.Input(dgram, from)
		}
		if delivered.Load() == before {
			b.Fatal("no packet reached the handler")
		}
	})
	b.Run("aes128gcm-seal-1400", func(b *testing.B) {
		blk, _ := aes.NewCipher(make([]byte, 16))
		aead, _ := cipher.NewGCM(blk)
		nonce := make([]byte, 12)
		dst := make([]byte, 0, 1500)
		b.ReportAllocs()
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			aead.Seal(dst[:0], nonce, pkt, nil)
		}
	})
}
