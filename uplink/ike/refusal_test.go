package ike

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// lockedBuf is a log sink shared by the engine's goroutine and the test.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON log records with message msg.
func (l *lockedBuf) lines(t *testing.T, msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(l.b.String(), "\n") {
		if !strings.Contains(s, msg) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("log line %q: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

var gatewayKeys = ProposalKeys{IKE: "proposals.ike", ESP: "proposals.esp", Legacy: "proposals.allow_legacy"}

const refusedMsg = "proposal refused: no offered transform is allowed"

// TestMainModeRefusalLogged: an Android-like offer (MODP-1024 only) is
// refused by the default policy; the responder's WARN line names what was
// offered and what is allowed in strongSwan notation and the keys to
// change, once: the peer's retries within the window log at DEBUG only.
func TestMainModeRefusalLogged(t *testing.T) {
	var logs lockedBuf
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) {
			c.IKEProposals = MustProposals("aes256-sha1-modp1024,3des-sha1-modp1024")
		},
		cfgB: func(c *Config) {
			c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			c.ProposalKeys = gatewayKeys
		},
	})
	for i := 0; i < 3; i++ {
		p.dial(t)
		ev := p.wait(t, p.a, EventIKEDown, 0)
		if ne := (*NotifyError)(nil); !errors.As(ev.Err, &ne) || ne.Type != NotifyNoProposalChosen {
			t.Fatalf("attempt %d: %v, want NO-PROPOSAL-CHOSEN", i, ev.Err)
		}
	}
	if got := p.b.eng.Stats().NoProposalChosen.Load(); got != 3 {
		t.Errorf("NoProposalChosen %d, want 3", got)
	}
	lines := logs.lines(t, refusedMsg)
	if len(lines) != 1 {
		t.Fatalf("%d WARN refusal lines for one peer, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	want := map[string]string{
		"phase": "main", "offered": "aes256-sha1-modp1024,3des-sha1-modp1024",
		"allowed":    strings.Join(ProposalStrings(DefaultIKEProposals()), ","),
		"config_key": "proposals.ike", "legacy_key": "proposals.allow_legacy", "level": "WARN",
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %q", k, l[k], v)
		}
	}
	t.Logf("refusal line: %v", l)
}

// TestQuickModeRefusalLogged: a Windows-with-3DES-like ESP offer refused
// in Quick Mode logs phase "quick" and the ESP key; no legacy_key when
// nothing offered is legacy.
func TestQuickModeRefusalLogged(t *testing.T) {
	for _, tt := range []struct {
		offer, wantOffered string
		legacy             bool
	}{
		{"3des-sha1", "3des-sha1", true},
		{"aes128-sha1-ecp384", "aes128-sha1-ecp384", false},
	} {
		var logs lockedBuf
		p := newPair(t, pairOpts{
			cfgA: func(c *Config) { c.ESPProposals = MustESPProposals(tt.offer) },
			cfgB: func(c *Config) {
				c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
				c.ProposalKeys = gatewayKeys
			},
		})
		p.dial(t)
		p.wait(t, p.a, EventChildFailed, 0)
		lines := logs.lines(t, refusedMsg)
		if len(lines) != 1 {
			t.Fatalf("%s: %d refusal lines, want 1", tt.offer, len(lines))
		}
		l := lines[0]
		if l["phase"] != "quick" || l["offered"] != tt.wantOffered || l["config_key"] != "proposals.esp" ||
			l["allowed"] != strings.Join(ProposalStrings(DefaultESPProposals()), ",") {
			t.Errorf("%s: line %v", tt.offer, l)
		}
		if _, has := l["legacy_key"]; has != tt.legacy {
			t.Errorf("%s: legacy_key present %v, want %v", tt.offer, has, tt.legacy)
		}
		if got := p.b.eng.Stats().QuickNoProposal.Load(); got != 1 {
			t.Errorf("%s: QuickNoProposal %d, want 1", tt.offer, got)
		}
	}
}

// TestRefusalLogBounded: refusals from many peers log at most
// refusalsPerSecond WARN lines a second and remember at most
// maxRefusalPeers peers.
func TestRefusalLogBounded(t *testing.T) {
	var logs lockedBuf
	e, err := New(Config{Sender: nopSender{}, Clock: stacktest.NewClock(), PSK: psk("k"), ProposalKeys: gatewayKeys,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	np := &NoProposalError{Phase: "main", Offered: []string{"des-md5-modp768"}}
	e.mu.Lock()
	for i := 0; i < 3*maxRefusalPeers; i++ {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		e.logRefusal(netip.AddrPortFrom(a, 500), np)
		if len(e.refused) > maxRefusalPeers {
			t.Fatalf("%d peers remembered, bound %d", len(e.refused), maxRefusalPeers)
		}
	}
	e.mu.Unlock()
	if n := len(logs.lines(t, refusedMsg)); n != refusalsPerSecond {
		t.Errorf("%d WARN lines in one second, want %d", n, refusalsPerSecond)
	}
}

// TestSetProposals: a new policy applies to the next Main Mode at once.
func TestSetProposals(t *testing.T) {
	p := newPair(t, pairOpts{
		cfgA: func(c *Config) { c.IKEProposals = MustProposals("aes128-sha256-ecp256") },
		cfgB: func(c *Config) { c.IKEProposals = MustProposals("aes256-sha256-modp2048") },
	})
	p.dial(t)
	if ev := p.wait(t, p.a, EventIKEDown, 0); !errors.As(ev.Err, new(*NotifyError)) {
		t.Fatalf("before: %v, want NO-PROPOSAL-CHOSEN", ev.Err)
	}
	if err := p.b.eng.SetProposals(MustProposals("aes256-sha256-modp2048,aes128-sha256-ecp256"), nil); err != nil {
		t.Fatal(err)
	}
	p.dial(t)
	p.wait(t, p.a, EventIKEUp, 0)
	if err := p.b.eng.SetProposals([]IKEProposal{{Cipher: encAESCBC, KeyBits: 128, Hash: HashSHA256, Group: 5}}, nil); err == nil {
		t.Error("SetProposals accepted an unsupported group")
	}
}

type nopSender struct{}

func (nopSender) SendIKE([]byte, netip.AddrPort, netip.AddrPort, bool) error { return nil }
