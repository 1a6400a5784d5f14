package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// checkPair asserts that two Child SAs are the two ends of one SA pair.
func checkPair(t *testing.T, ci, cr *ChildSA) {
	t.Helper()
	if ci.InSPI != cr.OutSPI || ci.OutSPI != cr.InSPI {
		t.Errorf("SPIs: initiator in/out %08x/%08x, responder in/out %08x/%08x", ci.InSPI, ci.OutSPI, cr.InSPI, cr.OutSPI)
	}
	if !bytes.Equal(ci.InKey, cr.OutKey) || !bytes.Equal(ci.OutKey, cr.InKey) {
		t.Errorf("KEYMAT differs between the ends")
	}
	if bytes.Equal(ci.InKey, ci.OutKey) {
		t.Errorf("inbound and outbound KEYMAT are equal")
	}
	if got, want := len(ci.InKey), ci.Suite.KeymatLen(); got != want {
		t.Errorf("KEYMAT length: got %d, want %d", got, want)
	}
	if ci.Suite != cr.Suite {
		t.Errorf("suites differ: %v vs %v", ci.Suite, cr.Suite)
	}
}

func TestPSKHandshake(t *testing.T) {
	tests := []struct {
		name      string
		nat       bool
		rawESP    bool
		ike, esp  string
		wantEncap bool
	}{
		{"no NAT, raw ESP allowed", false, true, "aes256-sha256-modp2048", "aes128gcm16", false},
		{"no NAT, forced encapsulation", false, false, "aes128-sha1-ecp256", "aes256-sha256", true},
		{"behind NAT", true, true, "aes256-sha384-ecp384", "aes128gcm16-ecp256", true},
		{"behind NAT, PFS modp2048", true, false, "aes256-sha256-modp2048", "aes256-sha1-modp2048", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := func(c *Config) {
				c.AllowRawESP = tt.rawESP
				c.IKEProposals = MustProposals(tt.ike)
				c.ESPProposals = MustESPProposals(tt.esp)
			}
			p := newPair(t, pairOpts{nat: tt.nat, cfgA: set, cfgB: set})
			p.dial(t)
			ia := p.wait(t, p.a, EventIKEUp, 0)
			ib := p.wait(t, p.b, EventIKEUp, 0)
			ca := p.wait(t, p.a, EventChildUp, 0).Child
			cb := p.wait(t, p.b, EventChildUp, 0).Child
			checkPair(t, ca, cb)
			if got, want := ca.Suite.String()+pfsSuffix(ca.PFS), tt.esp; got != want {
				t.Errorf("suite: got %s, want %s", got, want)
			}
			if ca.Encap != tt.wantEncap || cb.Encap != tt.wantEncap {
				t.Errorf("encap: got %v/%v, want %v", ca.Encap, cb.Encap, tt.wantEncap)
			}
			if got := ib.Peer.ID; got.Type != IDIPv4Addr || !bytes.Equal(got.Data, addrA.AsSlice()) {
				t.Errorf("responder saw peer ID %+v", got)
			}
			if ia.Peer.ID.Type != IDIPv4Addr {
				t.Errorf("initiator saw peer ID %+v", ia.Peer.ID)
			}
			if tt.nat {
				if got, want := cb.Remote, netip.AddrPortFrom(addrPublic, 4500+30000); got != want {
					t.Errorf("responder's remote: got %v, want %v (floated, translated)", got, want)
				}
				if cb.NATOARemote != addrA {
					t.Errorf("responder's NAT-OA for peer: got %v, want %v", cb.NATOARemote, addrA)
				}
				if ca.Local.Port() != 4500 || ca.Remote.Port() != 4500 {
					t.Errorf("initiator did not float: %v -> %v", ca.Local, ca.Remote)
				}
			}
			wantSel := Selectors{Protocol: 17, Local: netip.PrefixFrom(addrA, 32), LocalPort: 1701, Remote: netip.PrefixFrom(addrB, 32), RemotePort: 1701}
			if ca.Selectors != wantSel {
				t.Errorf("initiator selectors: got %+v, want %+v", ca.Selectors, wantSel)
			}
			if got := p.b.eng.Stats().Phase2Established.Load(); got != 1 {
				t.Errorf("responder Phase2Established: got %d, want 1", got)
			}
		})
	}
}

func pfsSuffix(g Group) string {
	if g == GroupNone {
		return ""
	}
	return "-" + g.String()
}

func TestWrongPSK(t *testing.T) {
	p := newPair(t, pairOpts{cfgB: func(c *Config) { c.PSK = psk("another key") }})
	p.dial(t)
	ev := p.wait(t, p.a, EventIKEDown, 0)
	var ne *NotifyError
	if !errors.As(ev.Err, &ne) || ne.Type != NotifyAuthenticationFailed {
		t.Fatalf("initiator: got %v, want AUTHENTICATION-FAILED notify", ev.Err)
	}
	if got := p.b.eng.Stats().AuthFailures.Load(); got != 1 {
		t.Errorf("responder AuthFailures: got %d, want 1", got)
	}
	if got := p.b.eng.SACount(); got != 0 {
		t.Errorf("responder kept %d SAs", got)
	}
}

func TestNoProposalChosen(t *testing.T) {
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) { c.IKEProposals = MustProposals("aes128-sha1-modp2048") },
		cfgB: func(c *Config) { c.IKEProposals = MustProposals("aes256-sha256-ecp256") },
	})
	p.dial(t)
	ev := p.wait(t, p.a, EventIKEDown, 0)
	var ne *NotifyError
	if !errors.As(ev.Err, &ne) || ne.Type != NotifyNoProposalChosen {
		t.Fatalf("got %v, want NO-PROPOSAL-CHOSEN", ev.Err)
	}
	if got := p.b.eng.Stats().NoProposalChosen.Load(); got != 1 {
		t.Errorf("NoProposalChosen: got %d, want 1", got)
	}
}

func TestResponderHonoursInitiatorOrder(t *testing.T) {
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) {
			c.IKEProposals = MustProposals("aes128-sha256-ecp256,aes256-sha256-modp2048")
			c.ESPProposals = MustESPProposals("aes256-sha1,aes128gcm16")
		},
		cfgB: func(c *Config) {
			c.IKEProposals = MustProposals("aes256-sha256-modp2048,aes128-sha256-ecp256")
			c.ESPProposals = MustESPProposals("aes128gcm16,aes256-sha1")
		},
	})
	p.dial(t)
	c := p.wait(t, p.b, EventChildUp, 0).Child
	if got := c.Suite.String(); got != "aes256-sha1" {
		t.Errorf("ESP: got %s, want the initiator's first choice aes256-sha1", got)
	}
	var sa *ikeSA
	p.b.eng.mu.Lock()
	for _, s := range p.b.eng.sas {
		sa = s
	}
	got := sa.prop.String()
	p.b.eng.mu.Unlock()
	if got != "aes128-sha256-ecp256" {
		t.Errorf("IKE: got %s, want the initiator's first choice", got)
	}
}

func TestLossyLinkRetransmits(t *testing.T) {
	imp := stacktest.Impairment{LossPercent: 30, DupPercent: 10, ReorderPercent: 10}
	p := newPair(t, pairOpts{pipe: stacktest.PipeConfig{AtoB: imp, BtoA: imp, Seed: 3}, cfgA: func(c *Config) { c.Retries = 20 }, cfgB: func(c *Config) { c.Retries = 20 }})
	p.dial(t)
	ca := p.wait(t, p.a, EventChildUp, time.Second).Child
	cb := p.wait(t, p.b, EventChildUp, time.Second).Child
	checkPair(t, ca, cb)
	if p.pipe.Stats.Dropped.Load() == 0 {
		t.Fatalf("the pipe dropped nothing; pick another seed")
	}
	if p.a.eng.Stats().Retransmits.Load()+p.b.eng.Stats().Retransmits.Load()+p.b.eng.Stats().Duplicates.Load() == 0 {
		t.Errorf("no retransmissions or duplicates counted on a lossy link")
	}
}

func TestDPDDeadPeer(t *testing.T) {
	p := newPair(t, pairOpts{cfgA: func(c *Config) { c.DPDInterval = 10 * time.Second; c.DPDTimeout = 40 * time.Second }})
	p.dial(t)
	p.wait(t, p.a, EventChildUp, 0)
	p.wait(t, p.b, EventChildUp, 0)
	// One DPD round trip with a live peer keeps the SA.
	p.clock.Advance(11 * time.Second)
	p.tick()
	deadline := time.Now().Add(5 * time.Second)
	for p.a.eng.Stats().DPDSent.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // waiting for the owner to run, not for protocol time
	}
	if got := p.a.eng.Stats().DPDSent.Load(); got != 1 {
		t.Fatalf("DPDSent: got %d, want 1", got)
	}
	// Now the responder dies.
	p.b.mu.Lock()
	p.b.drop = true
	p.b.mu.Unlock()
	ev := p.wait(t, p.a, EventChildDown, 5*time.Second)
	if !errors.Is(ev.Err, ErrDeadPeer) {
		t.Errorf("child down: got %v, want ErrDeadPeer", ev.Err)
	}
	ev = p.wait(t, p.a, EventIKEDown, 0)
	if !errors.Is(ev.Err, ErrDeadPeer) {
		t.Errorf("IKE down: got %v, want ErrDeadPeer", ev.Err)
	}
	if got := p.a.eng.Stats().DeadPeers.Load(); got != 1 {
		t.Errorf("DeadPeers: got %d, want 1", got)
	}
}

func TestRekeyChild(t *testing.T) {
	set := func(c *Config) {
		c.IPsecLifetime = 20 * time.Minute
		c.RekeyMargin = 5 * time.Minute
		c.RekeyGrace = 30 * time.Second
		c.DPDInterval = -1
	}
	p := newPair(t, pairOpts{cfgA: set, cfgB: set})
	p.dial(t)
	old := p.wait(t, p.a, EventChildUp, 0).Child
	p.wait(t, p.b, EventChildUp, 0)
	p.clock.Advance(15*time.Minute + time.Second)
	p.tick()
	ra := p.wait(t, p.a, EventChildRekeyed, 0)
	rb := p.wait(t, p.b, EventChildRekeyed, 0)
	if ra.Old != old || rb.Old == nil || rb.Old.InSPI != old.OutSPI {
		t.Fatalf("rekey did not name the old SA")
	}
	checkPair(t, ra.Child, rb.Child)
	if ra.Child.InSPI == old.InSPI || bytes.Equal(ra.Child.InKey, old.InKey) {
		t.Errorf("rekeyed SA reuses SPI or keys")
	}
	// Make-before-break: the old SA goes only after the grace period.
	select {
	case ev := <-p.a.events:
		t.Fatalf("unexpected event before the grace period: %v", ev.Kind)
	default:
	}
	p.clock.Advance(31 * time.Second)
	p.tick()
	down := p.wait(t, p.a, EventChildDown, 0)
	if down.Child != old {
		t.Errorf("child down: got SPI %08x, want the old %08x", down.Child.InSPI, old.InSPI)
	}
}

func TestRekeyIKE(t *testing.T) {
	set := func(c *Config) {
		c.IKELifetime = 30 * time.Minute
		c.RekeyMargin = 5 * time.Minute
		c.DPDInterval = -1
		c.IPsecLifetime = 40 * time.Minute
	}
	p := newPair(t, pairOpts{cfgA: set, cfgB: set})
	p.dial(t)
	p.wait(t, p.a, EventChildUp, 0)
	p.wait(t, p.b, EventChildUp, 0)
	p.clock.Advance(25*time.Minute + time.Second)
	p.tick()
	p.wait(t, p.a, EventIKEUp, 0)
	p.wait(t, p.b, EventIKEUp, 0)
	p.wait(t, p.a, EventIKEDown, 0) // the old SA, deleted by us
	p.wait(t, p.b, EventIKEDown, 0) // and by the peer's Delete
	if got := p.a.eng.SACount(); got != 1 {
		t.Errorf("initiator SAs after rekey: got %d, want 1", got)
	}
	select {
	case ev := <-p.a.events:
		t.Errorf("unexpected event %v: children must survive a phase 1 rekey", ev.Kind)
	default:
	}
	// The children moved to the new SA and are rekeyed through it.
	p.clock.Advance(10 * time.Minute)
	p.tick()
	p.wait(t, p.a, EventChildRekeyed, 0)
}

// TestInitialContact: a rebooted initiator (new engine, same identity)
// connects again; the responder drops the SAs it had with the old one.
func TestInitialContact(t *testing.T) {
	p := newPair(t, pairOpts{cfgB: func(c *Config) { c.DPDInterval = -1 }})
	p.dial(t)
	p.wait(t, p.a, EventChildUp, 0)
	old := p.wait(t, p.b, EventChildUp, 0).Child
	reborn, err := New(Config{Sender: p.a, Clock: p.clock, PSK: psk("correct horse battery staple"), OnEvent: func(ev Event) { p.a.events <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	p.a.mu.Lock()
	p.a.eng = reborn
	p.a.mu.Unlock()
	p.dial(t)
	down := p.wait(t, p.b, EventChildDown, 0)
	if down.Child != old {
		t.Errorf("child down: got %08x, want the old %08x", down.Child.InSPI, old.InSPI)
	}
	p.wait(t, p.b, EventChildUp, 0)
	if got := p.b.eng.SACount(); got != 1 {
		t.Errorf("responder SAs: got %d, want 1", got)
	}
}

func TestQuickModeNoProposalChosen(t *testing.T) {
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) { c.ESPProposals = MustESPProposals("aes128-sha1") },
		cfgB: func(c *Config) { c.ESPProposals = MustESPProposals("aes256gcm16") },
	})
	p.dial(t)
	p.wait(t, p.a, EventIKEUp, 0)
	ev := p.wait(t, p.a, EventChildFailed, 0)
	var ne *NotifyError
	if !errors.As(ev.Err, &ne) || ne.Type != NotifyNoProposalChosen {
		t.Fatalf("got %v, want NO-PROPOSAL-CHOSEN", ev.Err)
	}
	// A Quick Mode refusal is counted as such, not as a Main Mode one.
	if got, mm := p.b.eng.Stats().QuickNoProposal.Load(), p.b.eng.Stats().NoProposalChosen.Load(); got != 1 || mm != 0 {
		t.Errorf("responder QuickNoProposal %d, NoProposalChosen %d; want 1 and 0", got, mm)
	}
	if got := p.a.eng.SACount(); got != 1 {
		t.Errorf("phase 1 must survive a failed Quick Mode: %d SAs", got)
	}
}

// TestResponderLifetime: the gateway's shorter IPsec lifetime reaches the
// initiator in a RESPONDER-LIFETIME notify, so both ends expire (and the
// initiator rekeys) on the same schedule.
func TestResponderLifetime(t *testing.T) {
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) { c.IPsecLifetime = 8 * time.Hour },
		cfgB: func(c *Config) { c.IPsecLifetime = time.Hour; c.IPsecLifeKB = 500000 },
	})
	p.dial(t)
	ca := p.wait(t, p.a, EventChildUp, 0).Child
	cb := p.wait(t, p.b, EventChildUp, 0).Child
	if ca.Lifetime != time.Hour || cb.Lifetime != time.Hour {
		t.Errorf("lifetimes: initiator %v, responder %v, want 1h both", ca.Lifetime, cb.Lifetime)
	}
	if ca.LifeKB != 500000 || cb.LifeKB != 500000 {
		t.Errorf("volume lifetimes: initiator %d, responder %d, want 500000 KB both", ca.LifeKB, cb.LifeKB)
	}
}

// TestNATTDraftPeer: a peer that announces only draft-ietf-ipsec-nat-t-ike-02
// gets the draft payload numbers (NAT-D 130, NAT-OA 131) and encapsulation
// mode 61444, and still ends up UDP-encapsulated behind a NAT.
func TestNATTDraftPeer(t *testing.T) {
	p := newPair(t, pairOpts{nat: true})
	p.a.eng.initiatorVIDs = [][]byte{VIDNATTDraft02, VIDDPD}
	p.dial(t)
	ca := p.wait(t, p.a, EventChildUp, 0).Child
	cb := p.wait(t, p.b, EventChildUp, 0).Child
	checkPair(t, ca, cb)
	if !ca.Encap || !cb.Encap || cb.NATOARemote != addrA {
		t.Errorf("encap %v/%v, NAT-OA %v", ca.Encap, cb.Encap, cb.NATOARemote)
	}
	p.b.eng.mu.Lock()
	defer p.b.eng.mu.Unlock()
	for _, sa := range p.b.eng.sas {
		if sa.nat != natDraft {
			t.Errorf("responder NAT-T flavour: got %d, want draft", sa.nat)
		}
	}
}

// TestLegacyOffByDefault: a peer offering only 3DES/SHA1/MODP1024 is
// refused by the default policy and accepted when the legacy proposal is
// configured explicitly.
func TestLegacyOffByDefault(t *testing.T) {
	legacy := func(c *Config) {
		c.IKEProposals = MustProposals("3des-sha1-modp1024")
		c.ESPProposals = MustESPProposals("3des-sha1")
	}
	p := newPair(t, pairOpts{cfgA: legacy})
	p.dial(t)
	ev := p.wait(t, p.a, EventIKEDown, 0)
	var ne *NotifyError
	if !errors.As(ev.Err, &ne) || ne.Type != NotifyNoProposalChosen {
		t.Fatalf("default policy: got %v, want NO-PROPOSAL-CHOSEN", ev.Err)
	}
	for _, pr := range DefaultIKEProposals() {
		if pr.Legacy() {
			t.Errorf("default IKE proposal %v is legacy", pr)
		}
	}
	for _, pr := range DefaultESPProposals() {
		if pr.Suite.Legacy() || pr.PFS == GroupMODP1024 {
			t.Errorf("default ESP proposal %v is legacy", pr)
		}
	}
	q := newPair(t, pairOpts{cfgA: legacy, cfgB: legacy})
	q.dial(t)
	c := q.wait(t, q.b, EventChildUp, 0).Child
	if c.Suite.String() != "3des-sha1" || len(c.InKey) != 24+20 {
		t.Errorf("legacy child: %v with %d bytes of KEYMAT", c.Suite, len(c.InKey))
	}
}
