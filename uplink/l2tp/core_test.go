package l2tp

import (
	"errors"
	"testing"
	"time"
)

// pair drives a LAC core and an LNS core against each other without
// sockets or goroutines.
type pair struct {
	t        *testing.T
	now      time.Time
	lac, lns *core
	toLNS    [][]byte
	toLAC    [][]byte
	drop     func(toLNS bool, b []byte) bool
	lacEv    events
	lnsEv    events
	lacStats Stats
	lnsStats Stats
}

type events struct {
	established int
	closed      []error
	up          []*Session
	down        []error
}

func (e *events) hooks() coreEvents {
	return coreEvents{
		established: func() { e.established++ },
		closed:      func(err error) { e.closed = append(e.closed, err) },
		sessionUp:   func(s *Session) { e.up = append(e.up, s) },
		sessionDown: func(_ *Session, err error) { e.down = append(e.down, err) },
	}
}

func newPair(t *testing.T, mod func(lac, lns *Config)) *pair {
	p := &pair{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	lacCfg, lnsCfg := &Config{Stats: &p.lacStats}, &Config{Stats: &p.lnsStats}
	if mod != nil {
		mod(lacCfg, lnsCfg)
	}
	lacCfg.setDefaults()
	lnsCfg.setDefaults()
	p.lac = newCore(lacCfg, LAC, 100, func(b []byte) error { p.toLNS = append(p.toLNS, append([]byte(nil), b...)); return nil }, p.lacEv.hooks(), p.now)
	p.lns = newCore(lnsCfg, LNS, 200, func(b []byte) error { p.toLAC = append(p.toLAC, append([]byte(nil), b...)); return nil }, p.lnsEv.hooks(), p.now)
	return p
}

// flush delivers queued datagrams until both directions are quiet.
func (p *pair) flush() {
	for i := 0; i < 100 && (len(p.toLNS) > 0 || len(p.toLAC) > 0); i++ {
		a, b := p.toLNS, p.toLAC
		p.toLNS, p.toLAC = nil, nil
		for _, m := range a {
			if p.drop == nil || !p.drop(true, m) {
				p.lns.Input(p.now, m)
			}
		}
		for _, m := range b {
			if p.drop == nil || !p.drop(false, m) {
				p.lac.Input(p.now, m)
			}
		}
	}
}

func (p *pair) advance(d time.Duration) {
	p.now = p.now.Add(d)
	p.lac.Tick(p.now)
	p.lns.Tick(p.now)
	p.flush()
}

func msgType(b []byte) MessageType {
	_, m, _ := ParseControl(b, nil)
	return m.Type
}

func (p *pair) establish() {
	p.t.Helper()
	p.lac.Start(p.now)
	p.flush()
	if p.lac.state != tsEstablished || p.lns.state != tsEstablished {
		p.t.Fatalf("states: got LAC %v LNS %v, want established", p.lac.state, p.lns.state)
	}
}

func TestCoreEstablishAndSessions(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	if p.lac.peerID != 200 || p.lns.peerID != 100 {
		t.Fatalf("peer IDs: got %d/%d, want 200/100", p.lac.peerID, p.lns.peerID)
	}
	for i := 0; i < 3; i++ {
		s, err := p.lac.OpenSession(p.now)
		if err != nil {
			t.Fatal(err)
		}
		p.flush()
		if s.state != ssEstablished || s.PeerID() == 0 {
			t.Fatalf("session %d: state %v peer %d", i, s.state, s.PeerID())
		}
	}
	if len(p.lacEv.up) != 3 || len(p.lnsEv.up) != 3 {
		t.Fatalf("sessions up: got %d/%d, want 3/3", len(p.lacEv.up), len(p.lnsEv.up))
	}
	// LNS's view matches the LAC's.
	for _, s := range p.lnsEv.up {
		if p.lac.sessions[s.PeerID()] == nil || p.lac.sessions[s.PeerID()].PeerID() != s.localID {
			t.Fatalf("session IDs do not match: %d/%d", s.localID, s.PeerID())
		}
	}
	// CDN from the LAC closes the LNS session with the result code.
	s := p.lacEv.up[0]
	p.lac.CloseSession(p.now, s)
	p.flush()
	if len(p.lnsEv.down) != 1 {
		t.Fatalf("LNS sessions down: got %d, want 1", len(p.lnsEv.down))
	}
	var re *ResultError
	if !errors.As(p.lnsEv.down[0], &re) || re.Result != CDNAdmin || !errors.Is(re, ErrPeerCDN) {
		t.Fatalf("CDN reason: got %v", p.lnsEv.down[0])
	}
	if len(p.lns.sessions) != 2 || len(p.lac.sessions) != 2 {
		t.Fatalf("sessions left: got %d/%d, want 2/2", len(p.lac.sessions), len(p.lns.sessions))
	}
	// StopCCN from the LAC ends everything on both sides.
	p.lac.Close(p.now, StopClear, 0, ErrClosed)
	p.flush()
	if p.lac.state != tsDead {
		t.Fatalf("LAC state after acked StopCCN: got %v, want dead", p.lac.state)
	}
	if p.lns.state != tsLinger || len(p.lnsEv.down) != 3 {
		t.Fatalf("LNS: state %v, %d sessions down; want linger, 3", p.lns.state, len(p.lnsEv.down))
	}
	p.advance(DefaultLinger)
	if p.lns.state != tsDead || len(p.lnsEv.closed) != 1 || !errors.Is(p.lnsEv.closed[0], ErrPeerStop) {
		t.Fatalf("LNS after linger: %v %v", p.lns.state, p.lnsEv.closed)
	}
}

func TestCoreRetransmitBackoff(t *testing.T) {
	p := newPair(t, func(a, _ *Config) { a.SetupTimeout = time.Minute })
	var sent []time.Duration
	start := p.now
	p.drop = func(toLNS bool, b []byte) bool {
		if toLNS {
			sent = append(sent, p.now.Sub(start))
		}
		return true
	}
	p.lac.Start(p.now)
	p.flush()
	for i := 0; i < 60; i++ {
		p.advance(time.Second)
	}
	want := []time.Duration{0, 1, 3, 7, 15, 23}
	if len(sent) != len(want) {
		t.Fatalf("transmissions at %v, want %v seconds", sent, want)
	}
	for i := range want {
		if sent[i] != want[i]*time.Second {
			t.Fatalf("transmissions at %v, want %v seconds", sent, want)
		}
	}
	if p.lac.state != tsDead || len(p.lacEv.closed) != 1 || !errors.Is(p.lacEv.closed[0], ErrTimeout) {
		t.Fatalf("got state %v closed %v, want dead with ErrTimeout", p.lac.state, p.lacEv.closed)
	}
	if got := p.lacStats.ControlRetransmits.Load(); got != 5 {
		t.Errorf("retransmits: got %d, want 5", got)
	}
}

func TestCoreDuplicatesAndReorder(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	// Duplicate an in-sequence message: re-acked with a ZLB, counted, no effect.
	p.lac.OpenSession(p.now)
	icrq := p.toLNS[0]
	p.flush()
	p.lns.Input(p.now, icrq)
	if got := p.lnsStats.ControlDuplicates.Load(); got != 1 {
		t.Fatalf("duplicates: got %d, want 1", got)
	}
	if len(p.toLAC) != 1 || msgType(p.toLAC[0]) != MsgZLB {
		t.Fatalf("reply to duplicate: got %d messages, want one ZLB", len(p.toLAC))
	}
	p.flush()
	if len(p.lns.sessions) != 1 {
		t.Fatalf("LNS sessions: got %d, want 1", len(p.lns.sessions))
	}
	// Reorder: two ICRQs delivered in reverse order both get processed.
	p.lac.OpenSession(p.now)
	p.lac.OpenSession(p.now)
	a, b := p.toLNS[0], p.toLNS[1]
	p.toLNS = nil
	p.lns.Input(p.now, b)
	if got := p.lnsStats.ControlOutOfOrder.Load(); got != 1 {
		t.Fatalf("out of order: got %d, want 1", got)
	}
	p.lns.Input(p.now, a)
	p.flush()
	if len(p.lns.sessions) != 3 || len(p.lacEv.up) != 3 {
		t.Fatalf("sessions: got %d on LNS, %d up on LAC, want 3, 3", len(p.lns.sessions), len(p.lacEv.up))
	}
}

func TestCoreTunnelAuth(t *testing.T) {
	t.Run("same secret", func(t *testing.T) {
		p := newPair(t, func(a, b *Config) { a.Secret, b.Secret = []byte("s3cret"), []byte("s3cret") })
		p.establish()
	})
	t.Run("different secret", func(t *testing.T) {
		p := newPair(t, func(a, b *Config) { a.Secret, b.Secret = []byte("s3cret"), []byte("other") })
		p.lac.Start(p.now)
		p.flush()
		if p.lac.state != tsDead || len(p.lacEv.closed) != 1 || !errors.Is(p.lacEv.closed[0], ErrAuthFailed) {
			t.Fatalf("LAC: state %v closed %v, want dead with ErrAuthFailed", p.lac.state, p.lacEv.closed)
		}
		if p.lns.state != tsLinger || !errors.Is(p.lns.closeErr, ErrPeerStop) {
			t.Fatalf("LNS: state %v reason %v, want linger after the LAC's StopCCN", p.lns.state, p.lns.closeErr)
		}
		if p.lacStats.AuthFailures.Load() != 1 {
			t.Errorf("auth failures: got %d, want 1", p.lacStats.AuthFailures.Load())
		}
	})
	t.Run("LNS challenges a LAC without secret", func(t *testing.T) {
		p := newPair(t, func(_, b *Config) { b.Secret = []byte("s3cret") })
		p.lac.Start(p.now)
		p.flush()
		if p.lac.state == tsEstablished || p.lns.state == tsEstablished {
			t.Fatalf("established without authentication: %v %v", p.lac.state, p.lns.state)
		}
	})
}

func TestCoreHello(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	var hellos int
	p.drop = func(toLNS bool, b []byte) bool {
		if toLNS && msgType(b) == MsgHELLO {
			hellos++
		}
		return false
	}
	p.advance(DefaultHelloInterval - time.Second)
	if hellos != 0 {
		t.Fatalf("HELLO before the interval")
	}
	p.advance(time.Second)
	if hellos == 0 || p.lacStats.HellosSent.Load() == 0 {
		t.Fatalf("no HELLO after %v idle", DefaultHelloInterval)
	}
	if p.lac.state != tsEstablished {
		t.Fatalf("state: got %v", p.lac.state)
	}
}

func TestCoreUnknownMandatoryAVP(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	m := &Message{Type: MsgHELLO}
	m.AVPs = append(m.AVPs, AVP{Mandatory: true, Vendor: 9, Type: 1, Value: []byte{1}})
	b, _ := AppendControl(nil, Header{TunnelID: 200, Ns: p.lac.r.nextNs, Nr: p.lac.r.nr}, m, nil, nil)
	p.lns.Input(p.now, b)
	if p.lns.state != tsClosing {
		t.Fatalf("state: got %v, want closing", p.lns.state)
	}
	var stop *Message
	for _, b := range p.toLAC {
		if _, mm, _ := ParseControl(b, nil); mm.Type == MsgStopCCN {
			stop = &mm
		}
	}
	if stop == nil {
		t.Fatal("no StopCCN sent")
	}
	if r, c, _, _ := stop.ResultCode(); r != StopGeneralError || c != ErrCodeUnknownMandatory {
		t.Fatalf("result: got %d/%d, want %d/%d", r, c, StopGeneralError, ErrCodeUnknownMandatory)
	}
}

func TestCoreMalformedAndStrayInput(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	for _, b := range [][]byte{nil, {0xc8}, {0xc8, 0x02, 0xff, 0xff, 0, 0}, unhex(t, "c802 0014 0001 0000 0000 0000 80ff 0000 0000 0001")} {
		p.lns.Input(p.now, b)
	}
	if got := p.lnsStats.MalformedDropped.Load(); got != 4 {
		t.Fatalf("malformed: got %d, want 4", got)
	}
	if p.lns.state != tsEstablished {
		t.Fatalf("state: got %v", p.lns.state)
	}
	// Peer never acks: the tunnel gives up after the retransmissions.
	p.drop = func(bool, []byte) bool { return true }
	p.lac.OpenSession(p.now)
	for i := 0; i < 40; i++ {
		p.advance(time.Second)
	}
	if p.lac.state != tsDead || !errors.Is(p.lacEv.closed[0], ErrTimeout) {
		t.Fatalf("got %v %v", p.lac.state, p.lacEv.closed)
	}
}

func (c *core) peerIDForTest() uint16 { return uint16(c.pubPeerID.Load()) }

func TestCoreSLIWENAndOCRQ(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	s, _ := p.lac.OpenSession(p.now)
	p.flush()
	lnsSess := p.lnsEv.up[0]
	for _, typ := range []MessageType{MsgSLI, MsgWEN} {
		m := &Message{Type: typ}
		if typ == MsgSLI {
			m.Add(AVPACCM, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		} else {
			m.Add(AVPCallErrors, make([]byte, 26))
		}
		p.lac.enqueue(s.PeerID(), m)
	}
	p.flush()
	if p.lnsStats.SLIReceived.Load() != 1 || p.lnsStats.WENReceived.Load() != 1 || lnsSess.state != ssEstablished {
		t.Fatalf("SLI %d WEN %d session %v", p.lnsStats.SLIReceived.Load(), p.lnsStats.WENReceived.Load(), lnsSess.state)
	}
	// Outgoing calls are refused with CDN; the tunnel stays up.
	m := &Message{Type: MsgOCRQ}
	m.AddUint16(AVPAssignedSessionID, 99)
	p.lns.enqueue(0, m)
	var cdn *Message
	p.drop = func(toLNS bool, b []byte) bool {
		if _, mm, _ := ParseControl(b, nil); toLNS && mm.Type == MsgCDN {
			cdn = &mm
		}
		return false
	}
	p.flush()
	if cdn == nil || p.lac.state != tsEstablished {
		t.Fatalf("OCRQ: CDN %v, LAC state %v", cdn, p.lac.state)
	}
	if r, _, _, _ := cdn.ResultCode(); r != CDNPermResources {
		t.Fatalf("CDN result %d, want %d", r, CDNPermResources)
	}
}

func TestCoreLNSPlacesNoCalls(t *testing.T) {
	p := newPair(t, nil)
	p.establish()
	if _, err := p.lns.OpenSession(p.now); !errors.Is(err, ErrFSM) {
		t.Fatalf("LNS OpenSession: got %v, want ErrFSM", err)
	}
}
