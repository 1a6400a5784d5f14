package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Phase1 is what IKE phase 1 proved about the peer of a PPP link: the PPP
// login must be for the identity it names (BindPPP).
type Phase1 struct {
	// ID is the peer's ID payload as text (address, FQDN, user@FQDN).
	ID string
	// Cert is the peer's verified certificate (signature mode), else nil.
	Cert *x509.Certificate
	// None: the link has no IPsec (raw L2TP listener).
	None bool
}

// Phase1Of turns an IKE identity into a Phase1.
func Phase1Of(id ike.Identity) Phase1 { return Phase1{ID: idString(id.ID), Cert: id.Cert} }

// String describes the phase 1 identity for logs.
func (p Phase1) String() string {
	switch {
	case p.None:
		return "none (no IPsec)"
	case p.Cert != nil:
		return "cert:" + p.Cert.Subject.String()
	}
	return "psk:" + p.ID
}

// names are the identity strings phase 1 proved: the certificate's names,
// or the ID payload.
func (p Phase1) names() []string {
	if p.Cert != nil {
		return pki.Names(p.Cert)
	}
	if p.None || p.ID == "" {
		return nil
	}
	return []string{p.ID}
}

// ErrIdentityMismatch refuses a PPP login for another identity than the
// one phase 1 authenticated.
var ErrIdentityMismatch = errors.New("server: PPP login is not for the identity phase 1 authenticated")

// phase1Identity is the configured identity phase 1 names, or nil when it
// names none (a shared-PSK or psk.by_id peer, or no IPsec).
func phase1Identity(cfg *config.Config, p Phase1) *config.Identity {
	if p.None {
		return nil
	}
	if p.Cert != nil {
		for _, n := range pki.Names(p.Cert) {
			if id := cfg.IdentityByIKEID(n); id != nil && id.Auth == config.AuthCert {
				return id
			}
		}
		return nil
	}
	if id := cfg.IdentityByIKEID(p.ID); id != nil && id.Auth == config.AuthPSK {
		return id
	}
	return nil
}

// BindPPP checks that a PPP login for identity id may follow phase 1 p:
//   - a certificate: id is a cert identity whose id: is a name of it;
//   - a PSK ID naming an identity: that identity (phase 1 already checked
//     that the key was the one bound to the ID);
//   - any other phase 1 (the shared PSK, a psk.by_id key, no IPsec): only
//     identities that allow the shared PSK (config.Identity.AllowsSharedPSK).
func BindPPP(cfg *config.Config, p Phase1, id *config.Identity) error {
	if p.Cert != nil {
		if id.Auth == config.AuthCert && slices.Contains(pki.Names(p.Cert), id.ID) {
			return nil
		}
		return fmt.Errorf("%w: certificate %s does not name identity %s", ErrIdentityMismatch, p.Cert.Subject, id.Name)
	}
	if want := phase1Identity(cfg, p); want != nil {
		if want.Name == id.Name {
			return nil
		}
		return fmt.Errorf("%w: phase 1 ID %q is identity %s, not %s", ErrIdentityMismatch, p.ID, want.Name, id.Name)
	}
	if id.AllowsSharedPSK() {
		return nil
	}
	return fmt.Errorf("%w: identity %s does not log in after a shared-PSK phase 1 (ID %q)", ErrIdentityMismatch, id.Name, p.ID)
}

// BindRADIUS checks a RADIUS user the same way: boundTo is the value of
// radius.phase1_id_attribute in its Access-Accept ("" when absent or not
// configured). A bound user needs a phase 1 that proved that name; an
// unbound one only follows a phase 1 that names no configured identity.
func BindRADIUS(cfg *config.Config, p Phase1, user string, boundTo []string) error {
	if len(boundTo) > 0 {
		for _, n := range p.names() {
			if slices.Contains(boundTo, n) {
				return nil
			}
		}
		return fmt.Errorf("%w: RADIUS user %q is bound to %v, phase 1 proved %s", ErrIdentityMismatch, user, boundTo, p)
	}
	if p.Cert != nil {
		return fmt.Errorf("%w: RADIUS user %q is not bound to certificate %s (radius.phase1_id_attribute)", ErrIdentityMismatch, user, p.Cert.Subject)
	}
	if want := phase1Identity(cfg, p); want != nil {
		return fmt.Errorf("%w: phase 1 ID %q is identity %s, not RADIUS user %q", ErrIdentityMismatch, p.ID, want.Name, user)
	}
	return nil
}

// methodOrder is the order of methods offered after a phase 1 that names
// no identity: strongest first.
var methodOrder = []string{config.MethodMSCHAPv2, config.MethodCHAP, config.MethodPAP}

var methodByName = map[string]ppp.AuthMethod{config.MethodPAP: ppp.AuthPAP, config.MethodCHAP: ppp.AuthCHAPMD5, config.MethodMSCHAPv2: ppp.AuthMSCHAPv2}

// PPPMethods returns the PPP authentication methods offered to a link
// after phase 1 p: exactly the configured methods of the identity it
// names, in their order; else those of the identities a shared-PSK peer
// may log in as (plus MS-CHAPv2 and CHAP for RADIUS users).
func PPPMethods(cfg *config.Config, p Phase1) []ppp.AuthMethod {
	var names []string
	if id := phase1Identity(cfg, p); id != nil {
		names = id.PPP.Methods
	} else {
		if p.Cert != nil {
			return nil // a certificate naming no identity never gets this far
		}
		set := map[string]bool{}
		for i := range cfg.Identities {
			if id := &cfg.Identities[i]; id.AllowsSharedPSK() && id.PPP.Password != "" {
				for _, m := range id.PPP.Methods {
					set[m] = true
				}
			}
		}
		if cfg.RADIUS != nil {
			set[config.MethodMSCHAPv2], set[config.MethodCHAP] = true, true
		}
		for _, m := range methodOrder {
			if set[m] {
				names = append(names, m)
			}
		}
	}
	out := make([]ppp.AuthMethod, 0, len(names))
	for _, n := range names {
		if m, ok := methodByName[n]; ok {
			out = append(out, m)
		}
	}
	return out
}

// pskCandidates lists every pre-shared key a peer at remote may use, most
// likely first: a psk.by_id key for its address, the shared key, the
// identities' own keys, the other psk.by_id keys (ike.Config.ResponderPSKs).
func (e *Env) pskCandidates(remote netip.Addr) [][]byte {
	cfg := e.Config()
	var out [][]byte
	seen := map[string]bool{}
	add := func(k string) {
		if k != "" && !seen[k] {
			seen[k] = true
			out = append(out, []byte(k))
		}
	}
	add(cfg.PSK.ByID[remote.Unmap().String()])
	add(cfg.PSK.Shared)
	for i := range cfg.Identities {
		if id := &cfg.Identities[i]; id.Auth == config.AuthPSK {
			add(id.PSK)
		}
	}
	for _, k := range cfg.PSK.ByID {
		add(k)
	}
	return out
}

// pskForID is the key bound to a peer's ID (ike.Config.PSKForID): the
// identity's own key (or the shared one if it has none); none for a
// certificate identity; else psk.by_id for the ID, then for the peer's
// address, then the shared key.
func (e *Env) pskForID(id ike.Identification, remote netip.Addr) ([]byte, bool) {
	cfg := e.Config()
	name := idString(id)
	if ident := cfg.IdentityByIKEID(name); ident != nil {
		if ident.Auth != config.AuthPSK {
			return nil, false
		}
		if ident.PSK != "" {
			return []byte(ident.PSK), true
		}
		return []byte(cfg.PSK.Shared), cfg.PSK.Shared != ""
	}
	if k, ok := cfg.PSK.ByID[name]; ok && name != "" {
		return []byte(k), true
	}
	if k, ok := cfg.PSK.ByID[remote.Unmap().String()]; ok {
		return []byte(k), true
	}
	return []byte(cfg.PSK.Shared), cfg.PSK.Shared != ""
}

// boundIdentity reports whether what authenticated a peer is bound to its
// ID (ike.Config.BoundIdentity), so INITIAL-CONTACT may delete the other
// SAs of that ID: a certificate, a PSK of the identity's own or a
// psk.by_id key for that ID, or an address ID (the IKE engine then also
// requires the same source address). A shared-PSK FQDN is anyone's.
func (e *Env) boundIdentity(id ike.Identity) bool {
	if id.Cert != nil {
		return true
	}
	cfg := e.Config()
	name := idString(id.ID)
	if ident := cfg.IdentityByIKEID(name); ident != nil && ident.Auth == config.AuthPSK && ident.PSK != "" {
		return true
	}
	if _, ok := cfg.PSK.ByID[name]; ok && name != "" {
		return true
	}
	if _, isAddr := id.ID.Addr(); isAddr {
		return true
	}
	e.Metrics.Refused(metrics.CheckInitialContact)
	return false
}

// GatewayID is the IKE identity configured for the gateway (gateway_id),
// nil when unset.
func GatewayID(cfg *config.Config) *ike.Identification {
	g := cfg.GatewayID
	if g == "" {
		return nil
	}
	if a, err := netip.ParseAddr(g); err == nil {
		id := ike.AddrID(a.Unmap(), 0, 0)
		return &id
	}
	return &ike.Identification{Type: ike.IDFQDN, Data: []byte(g)}
}

// LocalAddrFor is the address packets to remote leave from (a route
// lookup: no packet is sent), presented as the gateway's ID when it
// listens on the wildcard address.
func LocalAddrFor(remote netip.Addr) (netip.Addr, bool) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 500)))
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return a, a.IsValid() && !a.IsUnspecified()
}
