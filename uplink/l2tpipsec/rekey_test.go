package l2tpipsec_test

import (
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

// TestRekeyUnderTraffic: with short lifetimes on a fake clock, both the
// IPsec SAs and the IKE SA are rekeyed several times while packets flow
// every second in both directions; not one packet is lost and the PPP
// session never notices (make-before-break, RFC 2409 §5.5 / esp.Rekey).
func TestRekeyUnderTraffic(t *testing.T) {
	stacktest.CheckGoroutines(t)
	short := func(o *l2tpipsec.IKEOptions) {
		o.IPsecLifetime, o.IKELifetime, o.RekeyMargin = 2*time.Minute, 4*time.Minute, 30*time.Second
	}
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{
		Client: func(c *l2tpipsec.ClientConfig) { short(&c.IKEOptions) },
		Server: func(c *l2tpipsec.ServerConfig) { short(&c.IKEOptions) },
	})
	first := p.Client.Status()
	cli, srv := newTally(), newTally()
	p.Client.SetPacketHandler(cli.handle)
	p.Session.SetPacketHandler(srv.handle)
	const n = 10 * 60 // 10 minutes, one packet per second each way
	for i := 0; i < n; i++ {
		if err := p.Client.WritePacket(pkttest.Tagged(l2tpipsectest.ClientAddr, l2tpipsectest.ServerAddr, uint32(i), 1000)); err != nil {
			t.Fatalf("client write at %ds: %v", i, err)
		}
		if err := p.Session.WritePacket(pkttest.Tagged(l2tpipsectest.ServerAddr, l2tpipsectest.ClientAddr, uint32(i), 300)); err != nil {
			t.Fatalf("server write at %ds: %v", i, err)
		}
		// Fake time must not outrun the stacks. A fixed real-time pause
		// per step was not enough on a loaded CI machine: the 30 s rekey
		// grace expired in fake time before an event goroutine had
		// switched to the new SA pair (one unknown-SPI drop in 600
		// packets, twice). So the clock advances only once this second's
		// packets have arrived at both ends: fake time moves no faster
		// than the stacks deliver, and a packet that is really lost
		// fails the test here, with its number.
		srv.waitFor(t, "server", i)
		cli.waitFor(t, "client", i)
		for range 10 {
			p.Clock.Advance(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
	}
	cs, ss := p.Client.Stats(), p.Server.Stats()
	t.Logf("unknown SPI drops: client %d server %d", cs.Transport.UnknownSPI.Load(), ss.Transport.UnknownSPI.Load())
	srv.waitFor(t, "server", n-1)
	cli.waitFor(t, "client", n-1)
	last := p.Client.Status()
	t.Logf("client rekeys %d, server rekeys %d, phase 1 established %d/%d, SPI %08x -> %08x",
		cs.IKE.Rekeys.Load(), ss.IKE.Rekeys.Load(), cs.IKE.Phase1Established.Load(), ss.IKE.Phase1Established.Load(), first.InSPI, last.InSPI)
	if last.InSPI == first.InSPI || last.OutSPI == first.OutSPI {
		t.Errorf("SPIs unchanged after 10 minutes with 2-minute IPsec SAs: %08x/%08x", last.InSPI, last.OutSPI)
	}
	if got := cs.IKE.Phase2Established.Load() + ss.IKE.Phase2Established.Load(); got < 2*4 {
		t.Errorf("Quick Modes completed (both ends) %d, want at least 8", got)
	}
	if got := cs.IKE.Phase1Established.Load() + ss.IKE.Phase1Established.Load(); got < 2*2 {
		t.Errorf("phase 1 completed (both ends) %d, want at least 4 (IKE SA rekeyed)", got)
	}
	// ESP both ways every second keeps dead peer detection quiet at both
	// ends (RFC 3706 §5.5: each tick reads the ESP peer's received mark).
	if c, s := cs.IKE.DPDSent.Load(), ss.IKE.DPDSent.Load(); c != 0 || s != 0 {
		t.Errorf("R-U-THERE sent under traffic: client %d, server %d, want 0", c, s)
	}
	if last.Phase != l2tpipsec.PhaseUp || p.Client.Err() != nil {
		t.Fatalf("tunnel not up after rekeys: %+v", last)
	}
	if d := cs.ESP.ReplayDrops.Load() + cs.ESP.AuthFailures.Load() + cs.Transport.UnknownSPI.Load(); d != 0 {
		t.Errorf("client dropped %d ESP packets", d)
	}
	// Each responder installs the new inbound SA with HASH(2), each
	// initiator switches at once: ESP overtaking HASH(3) is not dropped.
	if d := ss.ESP.ReplayDrops.Load() + ss.ESP.AuthFailures.Load() + ss.Transport.UnknownSPI.Load(); d != 0 {
		t.Errorf("server dropped %d ESP packets", d)
	}
}

// tally records the tags of the packets a side received.
type tally struct {
	mu      sync.Mutex
	seen    map[uint32]bool
	changed chan struct{} // closed and replaced on every new tag
}

func newTally() *tally { return &tally{seen: map[uint32]bool{}, changed: make(chan struct{})} }

func (c *tally) handle(p []byte) {
	if len(p) < 32 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag := pkttest.Tag(p); !c.seen[tag] {
		c.seen[tag] = true
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// waitFor waits until every tag 0..last arrived (10 s of real time).
func (c *tally) waitFor(t *testing.T, what string, last int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		missing := -1
		for i := 0; i <= last; i++ {
			if !c.seen[uint32(i)] {
				missing = i
				break
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if missing < 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s: packet %d of 0..%d never arrived (lost)", what, missing, last)
		}
	}
}
