package l2tpipsec_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestOnDemandProbe (fake clock), with the default timers (LCP echo every
// 20 s, 3 failures; ProbeAfter 2 s) and DPD off: with the link cut, an idle
// client sends nothing extra and stays up; once it sends a packet that
// gets no answer it probes every 2 s and ends the link in ~8 s instead of
// the keepalive's 60 s.
func TestOnDemandProbe(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{
		Client: func(c *l2tpipsec.ClientConfig) { c.DPDInterval = -1 },
		Server: func(c *l2tpipsec.ServerConfig) { c.EchoInterval, c.EchoFailures = time.Hour, 3 },
	})
	exchange(t, p, 0, 10)
	st := p.Client.Stats().PPP
	p.Link.SetDown(true)
	echoes := st.EchoRequestsSent.Load()
	for range 30 { // 15 s idle: no probing
		p.Clock.Advance(500 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	select {
	case <-p.Client.Done():
		t.Fatalf("idle client ended with the link cut after 15 s: %v", p.Client.Err())
	default:
	}
	if n := st.EchoRequestsSent.Load() - echoes; n > 1 || st.EchoProbes.Load() != 0 {
		t.Fatalf("idle for 15 s: %d echoes, %d probes; want at most the one 20 s keepalive and no probe", n, st.EchoProbes.Load())
	}
	sent := p.Clock.Now()
	if err := p.Client.WritePacket(pkttest.Tagged(l2tpipsectest.ClientAddr, l2tpipsectest.ServerAddr, 99, 200)); err != nil {
		t.Fatal(err)
	}
	last := st.EchoRequestsSent.Load()
	l2tpipsectest.Drive(t, p.Clock, 250*time.Millisecond, 20*time.Second, "client notices", func() bool {
		if n := st.EchoRequestsSent.Load(); n != last {
			t.Logf("echo at +%v (probes %d)", p.Clock.Now().Sub(sent), st.EchoProbes.Load())
			last = n
		}
		select {
		case <-p.Client.Done():
			return true
		default:
			return false
		}
	})
	took := p.Clock.Now().Sub(sent)
	err := p.Client.Err()
	if l2tpipsec.PhaseOf(err) != l2tpipsec.PhasePPP || !errors.Is(err, ppp.ErrEchoTimeout) || st.EchoProbes.Load() != 1 {
		t.Fatalf("client ended with %v (probes %d), want ErrEchoTimeout after one probe period", err, st.EchoProbes.Load())
	}
	if took > 12*time.Second { // fake clock: 2 s + 3 × 2 s (+ a step)
		t.Fatalf("dead link under traffic noticed after %v, want ~8 s", took)
	}
	t.Logf("idle 15 s with the link cut: up, no probe; after one unanswered packet: down in %v (fake clock), %d echoes", took, st.EchoRequestsSent.Load()-echoes)
}
