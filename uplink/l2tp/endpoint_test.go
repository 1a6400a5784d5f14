package l2tp

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// drive advances the fake clock in small steps until cond holds, giving
// the goroutines a moment of real time between steps to react.
func drive(t *testing.T, clk *stacktest.Clock, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		clk.Advance(50 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
}

func TestEndpointLossyPipe(t *testing.T) {
	stacktest.CheckGoroutines(t)
	imp := stacktest.Impairment{LossPercent: 5, DupPercent: 5, ReorderPercent: 5}
	pipe := stacktest.NewPipe(stacktest.PipeConfig{AtoB: imp, BtoA: imp, Seed: 7})
	clk := stacktest.NewClock()
	var lacStats, lnsStats Stats
	lns, _ := Listen(pipe.B, Config{Clock: clk, Stats: &lnsStats, Secret: []byte("x")})
	t.Cleanup(func() { lns.Close() })

	var tun atomic.Pointer[Tunnel]
	go func() {
		tt, err := Dial(context.Background(), pipe.A, stacktest.Addr("b"), Config{Clock: clk, Stats: &lacStats, Secret: []byte("x")})
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		tun.Store(tt)
	}()
	drive(t, clk, "tunnel", func() bool { return tun.Load() != nil })
	tt := tun.Load()
	t.Cleanup(func() { tt.Close() })

	const sessions = 4
	var lacSess [sessions]atomic.Pointer[Session]
	for i := range sessions {
		go func() {
			s, err := tt.OpenSession(context.Background())
			if err != nil {
				t.Errorf("open session: %v", err)
				return
			}
			lacSess[i].Store(s)
		}()
	}
	drive(t, clk, "sessions", func() bool {
		for i := range sessions {
			if lacSess[i].Load() == nil {
				return false
			}
		}
		return true
	})
	got := make(chan []byte, 100)
	for range sessions {
		s, err := lns.Accept(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.SetFrameHandler(func(f []byte) { got <- append([]byte{byte(s.PeerID() >> 8), byte(s.PeerID())}, f...) })
	}
	// Frames LAC -> LNS arrive tagged with the right session.
	s0 := lacSess[0].Load()
	for i := 0; i < 50; i++ {
		s0.WriteFrame([]byte{0xff, 0x03, 0x00, 0x21, byte(i)})
	}
	n := 0
	timeout := time.After(5 * time.Second)
	for n < 40 {
		select {
		case f := <-got:
			if f[0] != byte(s0.LocalID()>>8) || f[1] != byte(s0.LocalID()) || !bytes.Equal(f[2:6], []byte{0xff, 0x03, 0x00, 0x21}) {
				t.Fatalf("frame %x for the wrong session or corrupted", f)
			}
			n++
		case <-timeout:
			t.Fatalf("only %d of 50 frames arrived over a 5%% loss pipe", n)
		}
	}
	if lnsStats.TunnelsEstablished.Load() != 1 || lnsStats.SessionsEstablished.Load() != sessions {
		t.Fatalf("LNS stats: tunnels %d sessions %d", lnsStats.TunnelsEstablished.Load(), lnsStats.SessionsEstablished.Load())
	}
	// Clean teardown: StopCCN acknowledged, every session sees it.
	done := make(chan struct{})
	go func() { tt.Close(); close(done) }()
	drive(t, clk, "teardown", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	for i := range sessions {
		select {
		case <-lacSess[i].Load().Done():
		default:
			t.Fatalf("session %d not closed", i)
		}
	}
	drive(t, clk, "LNS tunnel gone", func() bool { return lnsStats.TunnelsClosed.Load() == 1 })
	t.Logf("pipe: sent %d dropped %d dup %d reordered %d; retransmits LAC %d LNS %d",
		pipe.Stats.Sent.Load(), pipe.Stats.Dropped.Load(), pipe.Stats.Duplicated.Load(), pipe.Stats.Reordered.Load(),
		lacStats.ControlRetransmits.Load(), lnsStats.ControlRetransmits.Load())
}

func TestEndpointSCCRQStorm(t *testing.T) {
	stacktest.CheckGoroutines(t)
	pipe := stacktest.NewPipe(stacktest.PipeConfig{})
	clk := stacktest.NewClock()
	var st Stats
	lns, _ := Listen(pipe.B, Config{Clock: clk, Stats: &st, MaxHalfOpenPerPeer: 4})
	t.Cleanup(func() { lns.Close(); pipe.A.Close() })
	for i := 1; i <= 200; i++ {
		m := (&core{cfg: &Config{HostName: "storm", ReceiveWindow: 4}, localID: uint16(i)}).sccMessage(MsgSCCRQ)
		b, _ := AppendControl(nil, Header{}, m, nil, nil)
		pipe.A.WriteTo(b, nil)
		if i%50 == 0 {
			time.Sleep(10 * time.Millisecond) // let the reader drain the queue
		}
	}
	drive(t, clk, "storm processed", func() bool { return st.SCCRQRefused.Load()+st.InboxOverflow.Load() >= 196-4 })
	lns.mu.RLock()
	n := len(lns.tunnels)
	lns.mu.RUnlock()
	if n != 4 {
		t.Fatalf("tunnels: got %d, want the half-open cap 4", n)
	}
	// Half-open tunnels expire at the setup timeout, freeing the slots.
	drive(t, clk, "half-open expiry", func() bool {
		lns.mu.RLock()
		defer lns.mu.RUnlock()
		return len(lns.tunnels) == 0
	})
}

// sccrq encodes an SCCRQ with assigned tunnel ptid.
func sccrq(ptid uint16) []byte {
	m := (&core{cfg: &Config{HostName: "peer", ReceiveWindow: 4}, localID: ptid}).sccMessage(MsgSCCRQ)
	b, _ := AppendControl(nil, Header{}, m, nil, nil)
	return b
}

// Several LACs behind one NAT share one transport address (all source
// port 1701): tunnels are told apart by the peer's tunnel ID, and a
// retransmitted SCCRQ does not create a second tunnel.
func TestEndpointSameAddressDemux(t *testing.T) {
	stacktest.CheckGoroutines(t)
	pipe := stacktest.NewPipe(stacktest.PipeConfig{})
	t.Cleanup(func() { pipe.A.Close() })
	clk := stacktest.NewClock()
	var st Stats
	lns, _ := Listen(pipe.B, Config{Clock: clk, Stats: &st})
	t.Cleanup(func() { lns.Close() })
	nat := stacktest.Addr("203.0.113.7:1701")
	lns.Input(sccrq(1), nat)
	lns.Input(sccrq(2), nat)
	lns.Input(sccrq(1), nat) // retransmission
	// ControlReceived counts an SCCRQ before its tunnel records the peer's
	// ID: wait for the IDs themselves (on a loaded machine the check read
	// one tunnel's ID as 0).
	var n int
	var peers map[uint16]bool
	tunnels := func() bool {
		lns.mu.RLock()
		defer lns.mu.RUnlock()
		n, peers = len(lns.tunnels), map[uint16]bool{}
		for _, tt := range lns.tunnels {
			peers[tt.c.peerIDForTest()] = true
		}
		return n >= 2 && peers[1] && peers[2]
	}
	drive(t, clk, "two tunnels with their peer IDs", tunnels)
	if tunnels(); n != 2 || !peers[1] || !peers[2] {
		t.Fatalf("tunnels: got %d with peer IDs %v, want 2 (1 and 2)", n, peers)
	}
	// A datagram for one of them from another address is refused.
	var id uint16
	lns.mu.RLock()
	for k := range lns.tunnels {
		id = k
	}
	lns.mu.RUnlock()
	zlb, _ := AppendControl(nil, Header{TunnelID: id}, &Message{}, nil, nil)
	lns.Input(zlb, stacktest.Addr("198.51.100.9:1701"))
	if st.WrongPeer.Load() != 1 {
		t.Fatalf("wrong peer: got %d, want 1", st.WrongPeer.Load())
	}
}

// An SCCRQ storm from one address is capped and does not disturb an
// established tunnel from another address.
func TestEndpointStormSparesOtherTunnels(t *testing.T) {
	stacktest.CheckGoroutines(t)
	pipe := stacktest.NewPipe(stacktest.PipeConfig{})
	clk := stacktest.NewClock()
	var st Stats
	lns, _ := Listen(pipe.B, Config{Clock: clk, Stats: &st, MaxHalfOpenPerPeer: 4})
	t.Cleanup(func() { lns.Close() })
	var tun atomic.Pointer[Tunnel]
	go func() {
		tt, err := Dial(context.Background(), pipe.A, stacktest.Addr("b"), Config{Clock: clk})
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		tun.Store(tt)
	}()
	drive(t, clk, "tunnel", func() bool { return tun.Load() != nil })
	tt := tun.Load()
	t.Cleanup(func() { tt.Close() })
	for i := 1; i <= 1000; i++ {
		lns.Input(sccrq(uint16(i)), stacktest.Addr("storm"))
	}
	if got := st.SCCRQRefused.Load(); got < 990 {
		t.Fatalf("refused: got %d of 1000, want all but the half-open cap", got)
	}
	var sess atomic.Pointer[Session]
	go func() {
		s, err := tt.OpenSession(context.Background())
		if err != nil {
			t.Errorf("session after storm: %v", err)
			return
		}
		sess.Store(s)
	}()
	drive(t, clk, "session after the storm", func() bool { return sess.Load() != nil })
}

// TestEndpointEarlyFramesQueued: frames that reach the LNS before its
// handler is set (PPP attaches after Accept) are held, bounded by
// MaxEarlyFrames, and delivered in order once the handler is set.
func TestEndpointEarlyFramesQueued(t *testing.T) {
	stacktest.CheckGoroutines(t)
	pipe := stacktest.NewPipe(stacktest.PipeConfig{Seed: 1})
	clk := stacktest.NewClock()
	var lnsStats Stats
	lns, _ := Listen(pipe.B, Config{Clock: clk, Stats: &lnsStats})
	t.Cleanup(func() { lns.Close() })
	var tun atomic.Pointer[Tunnel]
	go func() {
		tt, err := Dial(context.Background(), pipe.A, stacktest.Addr("b"), Config{Clock: clk})
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		tun.Store(tt)
	}()
	drive(t, clk, "tunnel", func() bool { return tun.Load() != nil })
	tt := tun.Load()
	t.Cleanup(func() { tt.Close() })
	var sess atomic.Pointer[Session]
	go func() {
		s, err := tt.OpenSession(context.Background())
		if err != nil {
			t.Errorf("open session: %v", err)
			return
		}
		sess.Store(s)
	}()
	drive(t, clk, "session", func() bool { return sess.Load() != nil })
	s := sess.Load()
	const sent = MaxEarlyFrames + 3
	for i := range sent {
		if err := s.WriteFrame([]byte{0xff, 0x03, 0xc0, 0x21, byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drive(t, clk, "frames queued", func() bool { return lnsStats.DataQueued.Load()+lnsStats.DataDropped.Load() >= sent })
	ls, err := lns.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	ls.SetFrameHandler(func(f []byte) { got = append(got, f[4]) })
	want := []byte{0, 1, 2, 3, 4, 5, 6, 7}
	if !bytes.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if q, d, r := lnsStats.DataQueued.Load(), lnsStats.DataDropped.Load(), lnsStats.DataReceived.Load(); q != MaxEarlyFrames || d != 3 || r != MaxEarlyFrames {
		t.Fatalf("queued %d dropped %d received %d, want %d %d %d", q, d, r, MaxEarlyFrames, 3, MaxEarlyFrames)
	}
}
