package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
	"github.com/fleetgate/fleetgate/uplink/link"
)

// newPair turns a Quick Mode result into ESP SAs (RFC 2409 §5.5 KEYMAT).
// Reaching the soft lifetime (volume or sequence space, RFC 4303 §3.3.3)
// asks the engine to rekey that child; OnSoftLimit runs on the data path,
// so the engine call is moved off it.
func newPair(c *ike.ChildSA, eng *ike.Engine, stats *esp.Stats) (in, out *esp.SA, err error) {
	inSPI := c.InSPI
	opt := esp.Options{
		Limits:      esp.LimitsFromKB(c.LifeKB),
		Stats:       stats,
		AllowLegacy: c.Suite.Legacy(), // IKE only negotiates legacy when configured to
		OnSoftLimit: func(*esp.SA) { go eng.RekeyChild(inSPI) },
	}
	return esp.NewSAPair(c.Suite, c.InSPI, c.InKey, c.OutSPI, c.OutKey, opt)
}

// logKeys records a child's keys in the opt-in Wireshark key log.
func logKeys(kl *keylog.Writer, c *ike.ChildSA) {
	if kl == nil {
		return
	}
	_ = kl.LogESPPair(c.Local.Addr(), c.Remote.Addr(), c.Suite, c.InSPI, c.InKey, c.OutSPI, c.OutKey)
}

// senderFunc adapts a function to ike.Sender (the transport is made after
// the engine, which needs a Sender first).
type senderFunc func(b []byte, local, remote netip.AddrPort, natt bool) error

func (f senderFunc) SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	return f(b, local, remote, natt)
}

// noteConn is the transport's L2TP PacketConn with a hook on every datagram
// read, used to tell IKE that authenticated traffic flows (DPD stays quiet,
// RFC 3706 §5.5) without taking the engine's lock per packet.
type noteConn struct {
	net.PacketConn
	onRead func(net.Addr)
}

func (c *noteConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.onRead(a)
	}
	return n, a, err
}

// tickLoop runs the engine's timers every tickInterval on clock and calls
// each() in between, until stop is closed.
func tickLoop(clock link.Clock, eng *ike.Engine, stop <-chan struct{}, each func()) {
	tm := clock.NewTimer(tickInterval)
	defer tm.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tm.C():
			eng.Tick()
			each()
			tm.Reset(tickInterval)
		}
	}
}

// byteCounter counts packets and bytes of one direction.
type byteCounter struct {
	Packets, Bytes atomic.Uint64
}

func (b *byteCounter) add(n int) {
	b.Packets.Add(1)
	b.Bytes.Add(uint64(n))
}

// switchOutbound makes out the peer's sending SA without touching its
// inbound SAs. esp.Transport only switches outbound together with a new
// inbound SA (Rekey), so a throwaway inbound SA with a random SPI and key
// is installed with it and removed at once; nothing is ever sealed for it.
// It needs the transport's automatic retirement off (RekeyGrace < 0): IKE's
// ChildDown for the old pair removes it instead.
func switchOutbound(tr *esp.Transport, p *esp.Peer, out *esp.SA) error {
	suite := out.Suite()
	key := make([]byte, suite.KeymatLen())
	var err error
	for range 4 {
		var b [4]byte
		if _, err = rand.Read(b[:]); err != nil {
			return err
		}
		if _, err = rand.Read(key); err != nil {
			return err
		}
		spi := binary.BigEndian.Uint32(b[:]) | 0x100 // 1-255 are reserved (RFC 4303 §2.1)
		var dummy *esp.SA
		if dummy, err = esp.NewSA(suite, spi, key, esp.Inbound, esp.Options{AllowLegacy: suite.Legacy()}); err != nil {
			return err
		}
		if err = tr.Rekey(p, dummy, out); err == nil {
			tr.RemoveSA(spi)
			return nil
		}
	}
	return err
}
