package config

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestDefaultProposalsOnePlace: without proposals the gateway takes
// uplink/ike's defaults; allow_legacy adds the legacy lists; and the shipped
// configs/gateway.yaml shows exactly those lists in its comments.
func TestDefaultProposalsOnePlace(t *testing.T) {
	c, err := Parse("f.yaml", []byte("psk: {shared: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Proposals.IKE, DefaultIKEProposals) || !slices.Equal(c.Proposals.ESP, DefaultESPProposals) {
		t.Fatalf("defaults: ike %v esp %v", c.Proposals.IKE, c.Proposals.ESP)
	}
	for _, p := range c.Proposals.IKE {
		if strings.Contains(p, "modp1024") || strings.Contains(p, "3des") || strings.Contains(p, "md5") {
			t.Errorf("legacy %s in the default IKE list", p)
		}
	}
	c, err = Parse("f.yaml", []byte("psk: {shared: x}\nproposals: {allow_legacy: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(DefaultIKEProposals), legacyIKEProposals...); !slices.Equal(c.Proposals.IKE, want) {
		t.Errorf("allow_legacy ike: %v, want %v", c.Proposals.IKE, want)
	}
	if want := append(slices.Clone(DefaultESPProposals), legacyESPProposals...); !slices.Equal(c.Proposals.ESP, want) {
		t.Errorf("allow_legacy esp: %v, want %v", c.Proposals.ESP, want)
	}

	b, err := os.ReadFile("../../configs/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for label, want := range map[string][]string{
		"ike default": DefaultIKEProposals, "esp default": DefaultESPProposals,
		"ike legacy": legacyIKEProposals, "esp legacy": legacyESPProposals,
	} {
		if got := commentList(string(b), label); !slices.Equal(got, want) {
			t.Errorf("configs/gateway.yaml %q comment:\n got %v\nwant %v", label, got, want)
		}
	}
}

// commentList reads "#   label:" and the comment lines under it that are
// indented further, as a comma-separated list.
func commentList(yaml, label string) []string {
	var out []string
	lines := strings.Split(yaml, "\n")
	for i, l := range lines {
		if strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), "#")) != label+":" {
			continue
		}
		for _, m := range lines[i+1:] {
			m = strings.TrimSpace(m)
			if !strings.HasPrefix(m, "#     ") {
				break
			}
			for _, f := range strings.Split(strings.TrimPrefix(m, "#"), ",") {
				if f = strings.TrimSpace(f); f != "" {
					out = append(out, f)
				}
			}
		}
		return out
	}
	return nil
}

// TestLegacyProposalNeedsOptIn: a legacy transform in an explicit list is
// refused with the key that opts in, at its line; with the opt-in it loads.
// Groups the IKE engine does not run are refused at load, not at start.
func TestLegacyProposalNeedsOptIn(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"proposals:\n  ike: [aes256-sha256-modp2048, 3des-sha1-modp1024]\n", `f.yaml:3: proposals.ike: "3des-sha1-modp1024" is a legacy transform`},
		{"proposals:\n  esp: [aes128gcm16, 3des-sha1]\n", `f.yaml:3: proposals.esp: "3des-sha1" is a legacy transform`},
		{"proposals:\n  ike: [aes128-sha1-modp1536]\n", `proposals.ike: "aes128-sha1-modp1536": not implemented`},
		{"proposals:\n  esp: [aes128gcm16-ecp521]\n", `proposals.esp: "aes128gcm16-ecp521": not implemented`},
	} {
		_, err := Parse("f.yaml", []byte("psk: {shared: x}\n"+tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.want)
		}
		if strings.Contains(tt.want, "legacy") && !strings.Contains(err.Error(), "proposals.allow_legacy: true") {
			t.Errorf("%q: error %v does not name the opt-in", tt.yaml, err)
		}
	}
	c, err := Parse("f.yaml", []byte("psk: {shared: x}\nproposals:\n  allow_legacy: true\n  ike: [3des-sha1-modp1024]\n  esp: [3des-sha1]\n"))
	if err != nil {
		t.Fatalf("with the opt-in: %v", err)
	}
	if len(c.Proposals.IKEParsed) != 1 || len(c.Proposals.ESPParsed) != 1 {
		t.Errorf("parsed %v %v", c.Proposals.IKEParsed, c.Proposals.ESPParsed)
	}
}
