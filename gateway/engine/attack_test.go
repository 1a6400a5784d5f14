package engine_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
)

// flood sends mk(i) to "to" from conns in turn, every interval, until stop
// is closed; it returns how many it sent.
func flood(conns []net.PacketConn, to net.Addr, interval time.Duration, stop <-chan struct{}, mk func(i int) []byte) int {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return i
		case <-t.C:
		}
		_, _ = conns[i%len(conns)].WriteTo(mk(i), to)
	}
}

// TestJunkDoesNotChargeVictim (issue 18, finding 5): 28-byte datagrams that
// look like the start of a Main Mode, 50/s with the victim's source address,
// used to spend the victim's per-source pacing (1/s, burst 5) so that its
// real Main Mode was refused for as long as the junk ran. The bound held:
// while the junk runs the victim still gets in, admission refuses none of
// its messages (refused = 0), and every junk datagram is dropped and counted
// as malformed (set-up failure reason "malformed"), charged to nobody.
func TestJunkDoesNotChargeVictim(t *testing.T) {
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	c, err := net.ListenPacket("udp", "127.0.0.1:0") // the victim's address
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent int
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent = flood([]net.PacketConn{c}, net.UDPAddrFromAddrPort(g.eng.Tunnel().IKEAddr()), 20*time.Millisecond, stop, junkFirstMainMode)
	}()
	es := g.eng.Stats()
	// Let the junk spend more than the victim's burst first.
	waitFor(t, "junk dropped", func() bool { return es.AdmissionMalformed.Load() >= 10 })
	start := time.Now()
	dial(t, g.clientConfig("hall7", "pw7"))
	took := time.Since(start)
	close(stop)
	wg.Wait()
	waitFor(t, "all junk counted", func() bool { return es.AdmissionMalformed.Load() >= uint64(sent) })
	t.Logf("victim set up in %v during %d junk datagrams from its address; malformed %d, refused %d",
		took.Round(time.Millisecond), sent, es.AdmissionMalformed.Load(), es.AdmissionRefused.Load())
	if n := es.AdmissionRefused.Load(); n != 0 {
		t.Errorf("admission refused %d first messages, want 0: junk was charged to the victim", n)
	}
	if n := es.AdmissionMalformed.Load(); n != uint64(sent) {
		t.Errorf("%d junk datagrams counted as malformed, want %d", n, sent)
	}
	if m := grepLines(g.scrape(t), `phase="admission",reason="malformed"`); !strings.Contains(m, "malformed") {
		t.Errorf("no admission/malformed set-up failures in the metrics")
	}
}
