package ike

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

// NoProposalError is a responder's refusal of every transform a peer
// offered: what it offered and what the policy allows, both in strongSwan
// notation, so the operator sees at once what to add (or which client to
// reconfigure). It wraps ErrNoProposalChosen.
type NoProposalError struct {
	Phase   string   // "main" (phase 1) or "quick" (phase 2)
	Offered []string // the peer's transforms in its order, duplicates removed, at most maxOffered
	Allowed []string // our policy, most preferred first
	// Legacy reports that some offered transform is a legacy one (3DES,
	// MD5, MODP-1024) that a policy may allow only on explicit opt-in.
	Legacy bool
}

// maxOffered bounds what a refusal keeps of a peer's offer (a peer may
// send hundreds of transforms).
const maxOffered = 16

func (e *NoProposalError) Error() string {
	return fmt.Sprintf("%v in %s mode: offered %s; allowed %s", ErrNoProposalChosen, e.Phase,
		strings.Join(e.Offered, ","), strings.Join(e.Allowed, ","))
}

func (e *NoProposalError) Unwrap() error { return ErrNoProposalChosen }

func (e *NoProposalError) offer(s string, legacy bool) {
	e.Legacy = e.Legacy || legacy
	if len(e.Offered) < maxOffered && !slices.Contains(e.Offered, s) {
		e.Offered = append(e.Offered, s)
	}
}

// offeredIKE names a phase 1 transform as strongSwan would, including
// ciphers we do not implement (RFC 2409 Appendix A numbers).
func offeredIKE(p IKEProposal) string {
	var c string
	switch p.Cipher {
	case encAESCBC:
		c = fmt.Sprintf("aes%d", p.KeyBits)
	case enc3DES:
		c = "3des"
	case 1:
		c = "des"
	default:
		c = fmt.Sprintf("enc%d", p.Cipher)
	}
	return c + "-" + p.Hash.String() + "-" + p.Group.String()
}

// offeredESP names a phase 2 transform; single DES and NULL, which we
// never implement, get their strongSwan names.
func offeredESP(p ESPProposal) string {
	var s string
	switch p.Suite.Cipher {
	case 2, 11: // ESP_DES, ESP_NULL (RFC 2407 §4.4.4)
		name := "des"
		if p.Suite.Cipher == 11 {
			name = "null"
		}
		s = name + strings.TrimPrefix(esp.Suite{Cipher: esp.CipherAESCBC, Integ: p.Suite.Integ}.String(), "aes0")
	default:
		s = p.Suite.String()
	}
	if p.PFS != GroupNone {
		s += "-" + p.PFS.String()
	}
	return s
}

// ProposalKeys name, for refusal log lines, the settings an operator
// changes to accept a refused offer (e.g. "proposals.ike" in a gateway
// configuration). Empty fields are left out of the line.
type ProposalKeys struct {
	IKE, ESP string
	// Legacy is the opt-in that legacy transforms also need.
	Legacy string
}

// refusalWindow is how long a peer's refusal is not logged again at WARN.
const refusalWindow = 10 * time.Minute

// maxRefusalPeers bounds the per-peer refusal log memory.
const maxRefusalPeers = 1024

// refusalsPerSecond bounds WARN refusal lines across all peers (a flood
// of first messages from spoofed sources must not flood the log).
const refusalsPerSecond = 5

// logRefusal logs a refused offer: once per peer per refusalWindow at
// WARN, at most refusalsPerSecond lines a second in all; the rest at DEBUG.
// Called with e.mu held.
func (e *Engine) logRefusal(remote netip.AddrPort, np *NoProposalError) {
	now := e.cfg.Clock.Now()
	args := []any{"peer", remote, "phase", np.Phase, "offered", strings.Join(np.Offered, ","), "allowed", strings.Join(np.Allowed, ",")}
	key := e.cfg.ProposalKeys.IKE
	if np.Phase == "quick" {
		key = e.cfg.ProposalKeys.ESP
	}
	if key != "" {
		args = append(args, "config_key", key)
	}
	if np.Legacy && e.cfg.ProposalKeys.Legacy != "" {
		args = append(args, "legacy_key", e.cfg.ProposalKeys.Legacy)
	}
	const msg = "proposal refused: no offered transform is allowed"
	peer := remote.Addr()
	if last, ok := e.refused[peer]; ok && now.Sub(last) < refusalWindow {
		e.log.Debug(msg, args...)
		return
	}
	if now.Sub(e.refusedSec) >= time.Second {
		e.refusedSec, e.refusedN = now, 0
	}
	if e.refusedN >= refusalsPerSecond {
		e.log.Debug(msg, args...)
		return
	}
	if len(e.refused) >= maxRefusalPeers {
		for a, t := range e.refused {
			if now.Sub(t) >= refusalWindow {
				delete(e.refused, a)
			}
		}
		if len(e.refused) >= maxRefusalPeers {
			clear(e.refused)
		}
	}
	e.refused[peer] = now
	e.refusedN++
	e.log.Warn(msg, args...)
}
