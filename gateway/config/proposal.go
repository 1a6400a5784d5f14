package config

import (
	"fmt"
	"strings"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// Proposals are the accepted IKE and ESP proposals, most preferred first,
// written as strongSwan proposal strings ("aes256-sha256-modp2048",
// "aes128gcm16"). Empty lists take the project's one default policy
// (uplink/ike DefaultIKEProposals / DefaultESPProposals, the same the
// bridge proposes).
type Proposals struct {
	IKE []string `yaml:"ike"`
	ESP []string `yaml:"esp"`
	// AllowLegacy opts in to legacy transforms (MODP-1024, 3DES, HMAC-MD5):
	// the empty lists then also take uplink/ike's Legacy*Proposals, and
	// explicit lists may name legacy transforms (refused otherwise).
	AllowLegacy bool `yaml:"allow_legacy"`

	// IKEParsed and ESPParsed are the parsed proposals.
	IKEParsed []IKEProposal `yaml:"-"`
	ESPParsed []ESPProposal `yaml:"-"`
}

// DefaultIKEProposals and DefaultESPProposals are uplink/ike's defaults as
// strings: the one default policy, not a copy.
var (
	DefaultIKEProposals = ike.ProposalStrings(ike.DefaultIKEProposals())
	DefaultESPProposals = ike.ProposalStrings(ike.DefaultESPProposals())
	legacyIKEProposals  = ike.ProposalStrings(ike.LegacyIKEProposals())
	legacyESPProposals  = ike.ProposalStrings(ike.LegacyESPProposals())
)

// Keys a refusal log line points to (ike.Config.ProposalKeys).
const (
	KeyIKEProposals = "proposals.ike"
	KeyESPProposals = "proposals.esp"
	KeyAllowLegacy  = "proposals.allow_legacy"
)

// legacyHint is the end of the error for a legacy proposal without the
// opt-in.
const legacyHint = "a legacy transform (MODP-1024, 3DES or HMAC-MD5; only Android <= 11 and old Windows/macOS clients need one): " +
	"set proposals.allow_legacy: true to accept it, or remove it"

// IKEProposal is one IKEv1 phase 1 transform (RFC 2409 appendix A values).
type IKEProposal struct {
	Cipher  string // "aes" or "3des"
	KeyBits int    // 128/192/256 for AES, 192 for 3DES
	Hash    string // md5, sha1, sha256, sha384, sha512
	DHGroup int    // RFC 2409/3526/5903 group number
}

// ESPProposal is one ESP transform with an optional PFS group.
type ESPProposal struct {
	Suite esp.Suite
	// PFSGroup is the Quick Mode PFS DH group, 0 for none.
	PFSGroup int
}

var dhGroups = map[string]int{
	"modp768": 1, "modp1024": 2, "modp1536": 5, "modp2048": 14, "modp3072": 15,
	"modp4096": 16, "modp6144": 17, "modp8192": 18, "ecp256": 19, "ecp384": 20, "ecp521": 21,
	"curve25519": 31, "x25519": 31,
}

var hashes = map[string]esp.Integ{
	"md5": esp.IntegHMACMD5_96, "sha1": esp.IntegHMACSHA1_96, "sha256": esp.IntegHMACSHA256_128,
	"sha384": esp.IntegHMACSHA384_192, "sha512": esp.IntegHMACSHA512_256,
}

func parseCipher(s string) (name string, bits int, gcm bool, err error) {
	switch s {
	case "3des":
		return "3des", 192, false, nil
	case "aes128", "aes":
		return "aes", 128, false, nil
	case "aes192":
		return "aes", 192, false, nil
	case "aes256":
		return "aes", 256, false, nil
	case "aes128gcm16", "aes128gcm128":
		return "aes", 128, true, nil
	case "aes256gcm16", "aes256gcm128":
		return "aes", 256, true, nil
	}
	return "", 0, false, fmt.Errorf("unknown cipher %q (want aes128, aes256, aes128gcm16, aes256gcm16, 3des)", s)
}

// ParseIKEProposal parses "aes256-sha256-modp2048".
func ParseIKEProposal(s string) (IKEProposal, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	if len(parts) != 3 {
		return IKEProposal{}, fmt.Errorf("IKE proposal %q: want cipher-hash-dhgroup, e.g. aes256-sha256-modp2048", s)
	}
	name, bits, gcm, err := parseCipher(parts[0])
	if err != nil {
		return IKEProposal{}, fmt.Errorf("IKE proposal %q: %v", s, err)
	}
	if gcm {
		return IKEProposal{}, fmt.Errorf("IKE proposal %q: IKEv1 has no AEAD ciphers", s)
	}
	if _, ok := hashes[parts[1]]; !ok {
		return IKEProposal{}, fmt.Errorf("IKE proposal %q: unknown hash %q", s, parts[1])
	}
	g, ok := dhGroups[parts[2]]
	if !ok {
		return IKEProposal{}, fmt.Errorf("IKE proposal %q: unknown DH group %q", s, parts[2])
	}
	return IKEProposal{Cipher: name, KeyBits: bits, Hash: parts[1], DHGroup: g}, nil
}

// ParseESPProposal parses "aes128gcm16", "aes256-sha256" or
// "aes128-sha1-modp2048" (the last part selects PFS).
func ParseESPProposal(s string) (ESPProposal, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	if len(parts) == 0 || len(parts) > 3 || parts[0] == "" {
		return ESPProposal{}, fmt.Errorf("ESP proposal %q: want cipher[-integrity][-dhgroup]", s)
	}
	_, bits, gcm, err := parseCipher(parts[0])
	if err != nil {
		return ESPProposal{}, fmt.Errorf("ESP proposal %q: %v", s, err)
	}
	var p ESPProposal
	rest := parts[1:]
	switch {
	case gcm:
		p.Suite = esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: bits}
	case parts[0] == "3des":
		p.Suite = esp.Suite{Cipher: esp.Cipher3DES, KeyBits: 192}
	default:
		p.Suite = esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: bits}
	}
	if !gcm {
		if len(rest) == 0 {
			return ESPProposal{}, fmt.Errorf("ESP proposal %q: CBC ciphers need an integrity algorithm, e.g. %s-sha256", s, parts[0])
		}
		in, ok := hashes[rest[0]]
		if !ok {
			return ESPProposal{}, fmt.Errorf("ESP proposal %q: unknown integrity %q", s, rest[0])
		}
		p.Suite.Integ = in
		rest = rest[1:]
	}
	if len(rest) == 1 {
		g, ok := dhGroups[rest[0]]
		if !ok {
			return ESPProposal{}, fmt.Errorf("ESP proposal %q: unknown DH group %q", s, rest[0])
		}
		p.PFSGroup = g
	} else if len(rest) > 1 {
		return ESPProposal{}, fmt.Errorf("ESP proposal %q: too many parts", s)
	}
	if err := p.Suite.Validate(); err != nil {
		return ESPProposal{}, fmt.Errorf("ESP proposal %q: %v", s, err)
	}
	return p, nil
}
