package ppp_test

import (
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// frameSession is a Session whose frames the test injects by hand; what
// PPP writes is thrown away.
type frameSession struct {
	mu      sync.Mutex
	handler func([]byte)
	done    chan struct{}
}

func (s *frameSession) WriteFrame2(head, body []byte) error { return nil }
func (s *frameSession) SetFrameHandler(fn func([]byte)) {
	s.mu.Lock()
	s.handler = fn
	s.mu.Unlock()
}
func (s *frameSession) Done() <-chan struct{} { return s.done }
func (s *frameSession) input(f []byte) {
	s.mu.Lock()
	fn := s.handler
	s.mu.Unlock()
	fn(f)
}

// TestPacketHandlerFromFirstFrame: an IPv4 frame that reaches the Conn
// right after Attach (before any SetPacketHandler could run) is held
// behind the control frames when Config.PacketHandler is set; without a
// handler it is dropped at once. This was TestFirstPacketAtIPCPUp's
// loss under load: the whole negotiation finished before the server's
// SetPacketHandler call after Attach.
func TestPacketHandlerFromFirstFrame(t *testing.T) {
	ipv4 := append([]byte{0xff, 0x03, 0x00, 0x21}, make([]byte, 28)...)
	ipv4[4] = 0x45
	for _, withHandler := range []bool{true, false} {
		var st ppp.Stats
		s := &frameSession{done: make(chan struct{})}
		cfg := ppp.Config{Role: ppp.Server, Stats: &st}
		if withHandler {
			cfg.PacketHandler = func([]byte) {}
		}
		c := ppp.Attach(s, cfg)
		s.input(ipv4)
		queued, dropped := st.EarlyIPv4Queued.Load(), st.PacketsDropped.Load()
		close(s.done)
		<-c.Done()
		if withHandler && queued != 1 {
			t.Errorf("with Config.PacketHandler: early queued %d, want 1 (dropped %d)", queued, dropped)
		}
		if !withHandler && (queued != 0 || dropped != 1) {
			t.Errorf("without a handler: early queued %d dropped %d, want 0 and 1", queued, dropped)
		}
	}
}
