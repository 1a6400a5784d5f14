package ike

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// clientLike is charon initiating with the proposal set a stock L2TP/IPsec
// client sends by default (IKEv1 Main Mode + Quick Mode, PSK), against our
// responder with the default policy, and with the legacy opt-in.
type clientLike struct {
	name          string
	ike, esp      string // charon's proposals, in the client's order
	defaultOK     bool   // accepted by DefaultIKEProposals/DefaultESPProposals
	refusedPhase  string // "main" or "quick" when not
	wantIKE       string // charon's selected IKE proposal once accepted
	wantESP       string // substring of its selected ESP proposal
	legacyOffered string // the offered list our refusal line must show
}

var clientSets = []clientLike{
	// Windows 10/11 RasMan L2TP: AES with HMAC-SHA1 on ECP-384/256 and
	// MODP-2048 first, 3DES and MODP-1024 last; ESP AES-CBC/3DES with SHA-1.
	{name: "Windows 10/11-like", ike: "aes256-sha1-ecp384,aes128-sha1-ecp256,aes256-sha1-modp2048,aes128-sha1-modp2048,3des-sha1-modp2048,3des-sha1-modp1024",
		esp: "aes256-sha1,aes128-sha1,3des-sha1", defaultOK: true,
		wantIKE: "IKE:AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/ECP_384", wantESP: "ESP:AES_CBC_256/HMAC_SHA1_96"},
	// strongSwan's own default proposals: in IKEv1 charon offers the first
	// algorithm of each kind of its default list, aes128-sha256-curve25519
	// (refused before Curve25519 was implemented), and aes128-sha256 ESP.
	{name: "strongSwan-default", ike: "default", esp: "default", defaultOK: true,
		wantIKE: "IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519", wantESP: "ESP:AES_CBC_128/HMAC_SHA2_256_128"},
	// macOS/iOS L2TP (racoon): SHA-256 with MODP-2048 first.
	{name: "Apple-like", ike: "aes256-sha256-modp2048,aes256-sha1-modp2048,aes128-sha1-modp2048,3des-sha1-modp1024",
		esp: "aes256-sha256,aes256-sha1,aes128-sha1,3des-sha1", defaultOK: true,
		wantIKE: "IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048", wantESP: "ESP:AES_CBC_256/HMAC_SHA2_256_128"},
	// Android <= 11 (racoon): MODP-1024 only in phase 1.
	{name: "Android-like", ike: "aes256-sha1-modp1024,aes128-sha1-modp1024,3des-sha1-modp1024,3des-md5-modp1024",
		esp: "aes256-sha1,aes128-sha1,3des-sha1", refusedPhase: "main",
		wantIKE: "IKE:AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024", wantESP: "ESP:AES_CBC_256/HMAC_SHA1_96",
		legacyOffered: "aes256-sha1-modp1024,aes128-sha1-modp1024,3des-sha1-modp1024,3des-md5-modp1024"},
	// An old Windows held to 3DES in phase 2 by policy: Main Mode passes,
	// Quick Mode is refused.
	{name: "old-Windows-like (3DES ESP)", ike: "aes128-sha1-modp2048", esp: "3des-sha1", refusedPhase: "quick",
		wantIKE: "IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", wantESP: "ESP:3DES_CBC/HMAC_SHA1_96",
		legacyOffered: "3des-sha1"},
}

// TestInteropClientProposalSets: which stock clients' default offers the
// default policy accepts, which need proposals.allow_legacy, and the log
// line a refused one gets (once, naming offered vs allowed and the keys).
func TestInteropClientProposalSets(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	for _, cs := range clientSets {
		for _, legacy := range []bool{false, true} {
			if legacy && cs.defaultOK {
				continue // nothing to opt in to
			}
			name := cs.name + "/default"
			if legacy {
				name = cs.name + "/allow_legacy"
			}
			t.Run(name, func(t *testing.T) {
				accepted := cs.defaultOK || legacy
				tc := interopCase{name: cs.name, ike: "aes256-sha256-modp2048", esp: "aes128gcm16", charonIKE: cs.ike, charonESP: cs.esp}
				ns := newNetnsPair(t)
				conf, files, set := interopSetup(t, tc, true)
				var logs lockedBuf
				e, events := interopEngine(t, ns.ours, func(c *Config) {
					set(c)
					// The policy under test: the defaults, plus the legacy
					// lists with the opt-in (as the gateway's allow_legacy).
					c.IKEProposals, c.ESPProposals = DefaultIKEProposals(), DefaultESPProposals()
					if legacy {
						c.IKEProposals = append(c.IKEProposals, LegacyIKEProposals()...)
						c.ESPProposals = append(c.ESPProposals, LegacyESPProposals()...)
					}
					c.ProposalKeys = gatewayKeys
					c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
				})
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("our refusals: %v", logs.lines(t, refusedMsg))
					}
				})
				ch := startCharon(t, ns.peer, conf, files)
				if accepted {
					nextEvent(t, events, EventIKEUp)
					ch.waitLog(t, "IKE_SA fg[1] established", "selected proposal: "+cs.wantIKE, "selected proposal: "+cs.wantESP)
					if n := len(logs.lines(t, refusedMsg)); n != 0 {
						t.Errorf("accepted offer logged %d refusals", n)
					}
					return
				}
				var line map[string]any
				deadline := time.Now().Add(15 * time.Second)
				for line == nil && time.Now().Before(deadline) {
					if l := logs.lines(t, refusedMsg); len(l) > 0 {
						line = l[0]
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if line == nil {
					t.Fatalf("no refusal logged for %s", cs.ike)
				}
				ch.waitLog(t, "NO_PROPOSAL_CHOSEN")
				t.Logf("refusal: %v", line)
				allowed := ProposalStrings(DefaultIKEProposals())
				key := "proposals.ike"
				if cs.refusedPhase == "quick" {
					allowed, key = ProposalStrings(DefaultESPProposals()), "proposals.esp"
				}
				if line["phase"] != cs.refusedPhase || line["offered"] != cs.legacyOffered ||
					line["allowed"] != strings.Join(allowed, ",") || line["config_key"] != key || line["legacy_key"] != "proposals.allow_legacy" {
					t.Errorf("refusal line %v", line)
				}
				st := e.Stats()
				if cs.refusedPhase == "main" && st.NoProposalChosen.Load() == 0 || cs.refusedPhase == "quick" && st.QuickNoProposal.Load() == 0 {
					t.Errorf("refusal not counted: main %d quick %d", st.NoProposalChosen.Load(), st.QuickNoProposal.Load())
				}
			})
		}
	}
}
