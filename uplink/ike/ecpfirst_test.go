package ike

import "testing"

func isElliptic(g Group) bool { return g == GroupECP256 || g == GroupECP384 || g == GroupCurve25519 }

// TestDefaultsECPFirst: every default prefers elliptic-curve DH (crypto/ecdh,
// constant time) to MODP (math/big, not constant time): the bridge's first
// offer is elliptic, no MODP phase 1 proposal precedes an elliptic one with
// the same hash, and no MODP PFS group precedes an elliptic one.
func TestDefaultsECPFirst(t *testing.T) {
	ike := DefaultIKEProposals()
	if !isElliptic(ike[0].Group) {
		t.Errorf("first default IKE proposal %v is not elliptic", ike[0])
	}
	for i, p := range ike {
		for _, q := range ike[i+1:] {
			if !isElliptic(p.Group) && isElliptic(q.Group) && p.Hash == q.Hash {
				t.Errorf("default IKE: %v (MODP) before %v (elliptic, same hash)", p, q)
			}
		}
	}
	modpSeen := ""
	for _, p := range DefaultESPProposals() {
		switch {
		case p.PFS == GroupNone:
		case !isElliptic(p.PFS):
			modpSeen = p.String()
		case modpSeen != "":
			t.Errorf("default ESP: MODP PFS %s before elliptic %v", modpSeen, p)
		}
	}
}
