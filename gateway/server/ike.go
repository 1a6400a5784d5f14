package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// FillIKEConfig sets the gateway-side fields of an IKE responder's
// configuration from the current gateway configuration: proposals (parsed
// by package ike from the same strongSwan strings), the NAT-T port, PSK
// lookup, CA pool, CRL check and the identity admission rule. The engine
// fills the rest (Sender, Cert, OnEvent ...). PSK, CheckCert and
// AllowIdentity read the configuration at call time, so a reload applies
// to new Main Modes at once; proposals and the CA pool are fixed when the
// IKE engine is built.
func (e *Env) FillIKEConfig(c *ike.Config) error {
	cfg := e.Config()
	c.IKEProposals, c.ESPProposals = nil, nil
	for _, s := range cfg.Proposals.IKE {
		p, err := ike.ParseIKEProposal(s)
		if err != nil {
			return fmt.Errorf("server: IKE proposal %q: %w", s, err)
		}
		c.IKEProposals = append(c.IKEProposals, p)
	}
	for _, s := range cfg.Proposals.ESP {
		p, err := ike.ParseESPProposal(s)
		if err != nil {
			return fmt.Errorf("server: ESP proposal %q: %w", s, err)
		}
		c.ESPProposals = append(c.ESPProposals, p)
	}
	c.NATTPort = uint16(cfg.Listen.NATTPort)
	c.PSK = e.pskForAddr
	c.ResponderPSKs = e.pskCandidates
	c.PSKForID = e.pskForID
	c.BoundIdentity = e.boundIdentity
	c.LocalID = GatewayID(cfg)
	c.LocalAddrFor = LocalAddrFor
	if v := e.Verifier(); v != nil {
		c.CAs = v.Pool()
		c.CheckCert = e.checkCert
	}
	c.AllowIdentity = e.allowIKEIdentity
	return nil
}

// pskForAddr tells the IKE engine whether PSK proposals can be accepted
// from remote at all (and gives the key it starts from): the most likely
// candidate. The key that counts is found at MM5 by trial among
// pskCandidates and must be the one bound to the peer's ID (pskForID).
func (e *Env) pskForAddr(remote netip.Addr) ([]byte, bool) {
	c := e.pskCandidates(remote)
	if len(c) == 0 {
		return nil, false
	}
	return c[0], true
}

// checkCert applies the current CRL and OCSP (pki.ocsp_url) to a chain
// the IKE engine verified.
func (e *Env) checkCert(leaf *x509.Certificate, _ []*x509.Certificate) error {
	v := e.Verifier()
	if v == nil {
		return errors.New("server: no CA configured")
	}
	if err := v.CheckRevoked(leaf); err != nil {
		return err
	}
	return e.srv.checkOCSP(leaf)
}

// allowIKEIdentity decides whether an authenticated phase 1 identity may
// proceed: a certificate must match a cert identity by one of its names;
// PSK peers are allowed when their ID names a PSK identity or when the
// shared PSK is in use (stock clients are identified by PPP later).
func (e *Env) allowIKEIdentity(id ike.Identity) bool {
	cfg := e.Config()
	if id.Cert != nil {
		for _, n := range pki.Names(id.Cert) {
			if ident := cfg.IdentityByIKEID(n); ident != nil && ident.Auth == config.AuthCert {
				return true
			}
		}
		e.Log.Warn("certificate matches no identity", "names", pki.Names(id.Cert))
		return false
	}
	name := idString(id.ID)
	if ident := cfg.IdentityByIKEID(name); ident != nil {
		return ident.Auth == config.AuthPSK
	}
	if _, ok := cfg.PSK.ByID[name]; ok {
		return true
	}
	return cfg.PSK.Shared != ""
}

// idString renders an ID payload the way identities are written in the
// configuration: an address, or the FQDN / user@FQDN text.
func idString(id ike.Identification) string {
	if a, ok := id.Addr(); ok {
		return a.String()
	}
	switch id.Type {
	case ike.IDFQDN, ike.IDUserFQDN:
		return string(id.Data)
	}
	return ""
}
