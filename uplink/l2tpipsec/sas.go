package l2tpipsec

import (
	"net/netip"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
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

// tickLoop runs the engine's timers every tickInterval on clock and calls
// each() in between, until stop is closed.
func tickLoop(clock clock.Clock, eng *ike.Engine, stop <-chan struct{}, each func()) {
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

// espPair is a child's SAs between EventChildInbound and EventChildUp.
type espPair struct{ in, out *esp.SA }

// byteCounter counts packets and bytes of one direction.
type byteCounter struct {
	Packets, Bytes atomic.Uint64
}

func (b *byteCounter) add(n int) {
	b.Packets.Add(1)
	b.Bytes.Add(uint64(n))
}
