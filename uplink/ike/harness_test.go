package ike

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// The in-memory harness: two engines over a stacktest pipe. Each datagram
// carries a 13-byte frame header (natt flag, source and destination
// IPv4:port) so that engines see real addresses; a simulated NAT in front
// of side A rewrites A's source address the way a NAPT would.

var (
	addrA      = netip.MustParseAddr("10.0.0.2")     // behind the NAT when nat is set
	addrB      = netip.MustParseAddr("192.0.2.1")    // the gateway
	addrPublic = netip.MustParseAddr("198.51.100.7") // the NAT's public address
)

type side struct {
	t      *testing.T
	conn   *stacktest.PipeConn
	eng    *Engine
	events chan Event
	self   netip.Addr
	natted bool // A behind NAT: translate its source on the way out
	mu     sync.Mutex
	drop   bool // simulate a dead peer: drop everything received
}

func (s *side) SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error {
	if s.natted {
		local = netip.AddrPortFrom(addrPublic, local.Port()+30000)
	}
	f := make([]byte, 13, 13+len(b))
	if natt {
		f[0] = 1
	}
	copy(f[1:5], local.Addr().AsSlice())
	binary.BigEndian.PutUint16(f[5:], local.Port())
	copy(f[7:11], remote.Addr().AsSlice())
	binary.BigEndian.PutUint16(f[11:], remote.Port())
	_, err := s.conn.WriteTo(append(f, b...), nil)
	return err
}

func (s *side) loop(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 70000)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		drop, eng := s.drop, s.eng
		s.mu.Unlock()
		if drop || n < 13 {
			continue
		}
		src4, _ := netip.AddrFromSlice(buf[1:5])
		dst4, _ := netip.AddrFromSlice(buf[7:11])
		src := netip.AddrPortFrom(src4, binary.BigEndian.Uint16(buf[5:]))
		dst := netip.AddrPortFrom(dst4, binary.BigEndian.Uint16(buf[11:]))
		if s.natted {
			dst = netip.AddrPortFrom(s.self, dst.Port()-30000)
		}
		eng.Input(append([]byte{}, buf[13:n]...), dst, src, buf[0] == 1)
	}
}

type pair struct {
	clock *stacktest.Clock
	a, b  *side
	pipe  *stacktest.Pipe
}

type pairOpts struct {
	nat     bool
	pipe    stacktest.PipeConfig
	cfgA    func(*Config)
	cfgB    func(*Config)
	noCheck bool
}

func psk(key string) func(netip.Addr) ([]byte, bool) {
	return func(netip.Addr) ([]byte, bool) { return []byte(key), true }
}

func newPair(t *testing.T, o pairOpts) *pair {
	t.Helper()
	if !o.noCheck {
		stacktest.CheckGoroutines(t)
	}
	p := &pair{clock: stacktest.NewClock(), pipe: stacktest.NewPipe(o.pipe)}
	p.a = &side{t: t, conn: p.pipe.A, events: make(chan Event, 64), self: addrA, natted: o.nat}
	p.b = &side{t: t, conn: p.pipe.B, events: make(chan Event, 64), self: addrB}
	for _, s := range []*side{p.a, p.b} {
		s := s
		cfg := Config{Sender: s, Clock: p.clock, Logger: testLogger(t, s.self.String()), PSK: psk("correct horse battery staple"), OnEvent: func(ev Event) { s.events <- ev }}
		if s == p.a && o.cfgA != nil {
			o.cfgA(&cfg)
		}
		if s == p.b && o.cfgB != nil {
			o.cfgB(&cfg)
		}
		eng, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.eng = eng
	}
	dones := []chan struct{}{make(chan struct{}), make(chan struct{})}
	go p.a.loop(dones[0])
	go p.b.loop(dones[1])
	t.Cleanup(func() {
		p.pipe.A.Close()
		p.pipe.B.Close()
		<-dones[0]
		<-dones[1]
	})
	return p
}

func (p *pair) dial(t *testing.T) {
	t.Helper()
	if err := p.a.eng.Dial(netip.AddrPortFrom(addrA, 500), netip.AddrPortFrom(addrB, 500)); err != nil {
		t.Fatal(err)
	}
}

func (p *pair) tick() {
	p.a.eng.Tick()
	p.b.eng.Tick()
}

// wait returns the next event of kind k on s, advancing the fake clock by
// step (and ticking both engines) whenever nothing happens for a while, so
// that retransmissions and timers run.
func (p *pair) wait(t *testing.T, s *side, k EventKind, step time.Duration) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case ev := <-s.events:
			if ev.Kind == k {
				return ev
			}
			t.Logf("skipping event %v (err %v)", ev.Kind, ev.Err)
		case <-time.After(30 * time.Millisecond):
			if step > 0 {
				p.clock.Advance(step)
				p.tick()
			}
		}
	}
	t.Fatalf("no %v event", k)
	return Event{}
}

// testLogger logs to the test when FLEETGATE_IKE_DEBUG is set.
func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("FLEETGATE_IKE_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", name)
}
