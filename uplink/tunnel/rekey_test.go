package tunnel_test

import (
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/uplink/link/linktest"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
	"github.com/fleetgate/fleetgate/uplink/tunnel/tunneltest"
)

// TestRekeyUnderTraffic: with short lifetimes on a fake clock, both the
// IPsec SAs and the IKE SA are rekeyed several times while packets flow
// every second in both directions; not one packet is lost and the PPP
// session never notices (make-before-break, RFC 2409 §5.5 / esp.Rekey).
func TestRekeyUnderTraffic(t *testing.T) {
	linktest.CheckGoroutines(t)
	short := func(o *tunnel.IKEOptions) {
		o.IPsecLifetime, o.IKELifetime, o.RekeyMargin = 2*time.Minute, 4*time.Minute, 30*time.Second
	}
	p := tunneltest.NewPair(t, tunneltest.Options{
		Client: func(c *tunnel.ClientConfig) { short(&c.IKEOptions) },
		Server: func(c *tunnel.ServerConfig) { short(&c.IKEOptions) },
	})
	first := p.Client.Status()
	cli, srv := make(collector, 8192), make(collector, 8192)
	p.Client.SetPacketHandler(cli.handle)
	p.Session.SetPacketHandler(srv.handle)
	const n = 10 * 60 // 10 minutes, one packet per second each way
	for i := 0; i < n; i++ {
		if err := p.Client.WritePacket(pkttest.Tagged(tunneltest.ClientAddr, tunneltest.ServerAddr, uint32(i), 1000)); err != nil {
			t.Fatalf("client write at %ds: %v", i, err)
		}
		if err := p.Session.WritePacket(pkttest.Tagged(tunneltest.ServerAddr, tunneltest.ClientAddr, uint32(i), 300)); err != nil {
			t.Fatalf("server write at %ds: %v", i, err)
		}
		// Fake time must not outrun the stacks: a second in ten steps,
		// each giving the goroutines a moment (rekey exchanges, SA
		// switches) to run. With 300 µs per step a loaded CI machine let
		// the 30 s rekey grace expire in fake time before the client's
		// event goroutine had switched to the new outbound SA (one
		// unknown-SPI drop in one run of four); 1 ms per step keeps real
		// time ahead of the stacks' scheduling delays.
		for range 10 {
			p.Clock.Advance(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
	}
	cs, ss := p.Client.Stats(), p.Server.Stats()
	t.Logf("unknown SPI drops: client %d server %d", cs.Transport.UnknownSPI.Load(), ss.Transport.UnknownSPI.Load())
	srv.expect(t, "server", n)
	cli.expect(t, "client", n)
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
	if last.Phase != tunnel.PhaseUp || p.Client.Err() != nil {
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
