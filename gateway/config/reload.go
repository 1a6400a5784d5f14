package config

import (
	"fmt"
	"reflect"
	"slices"
)

// Changes is what a reload (SIGHUP) changes, computed by Diff. Sessions of
// identities in Removed or Changed are affected and must be closed (they
// reconnect under the new rules); all others keep running untouched.
type Changes struct {
	Added   []string // identities new in the reloaded file
	Removed []string // identities gone: their sessions are closed
	Changed []string // identities whose effective settings changed
	// AllSessions lists reasons that affect every session (pool, DNS, MTU,
	// proposals); empty when none.
	AllSessions []string
	// RestartNeeded lists settings a reload cannot apply (listen
	// addresses, data plane mode, metrics listener); they keep their old
	// values until restart.
	RestartNeeded []string
}

// Affects reports whether the session of identity must be closed.
func (ch Changes) Affects(identity string) bool {
	return len(ch.AllSessions) > 0 || slices.Contains(ch.Removed, identity) || slices.Contains(ch.Changed, identity)
}

// Empty reports whether nothing changed.
func (ch Changes) Empty() bool {
	return len(ch.Added)+len(ch.Removed)+len(ch.Changed)+len(ch.AllSessions)+len(ch.RestartNeeded) == 0
}

// effective is everything that decides how one identity's session behaves.
type effective struct {
	ID        Identity
	SharedPSK string
	Policy    Policy
	Default   string
	Replace   bool
}

func (c *Config) effective(id *Identity) effective {
	e := effective{ID: *id, Replace: c.Sessions.Replace()}
	e.ID.Source = ""
	if id.Auth == AuthPSK && id.PSK == "" {
		e.SharedPSK, _ = c.PSKFor(id.ID)
	}
	if id.Policy != "" {
		e.Policy = c.Policies[id.Policy]
	} else {
		e.Default = c.Policy.Default
	}
	if id.ReplaceSession != nil {
		e.Replace = *id.ReplaceSession
	}
	return e
}

// Diff computes what changes from old to new.
func Diff(old, new *Config) Changes {
	var ch Changes
	for i := range new.Identities {
		n := &new.Identities[i]
		o := old.Identity(n.Name)
		switch {
		case o == nil:
			ch.Added = append(ch.Added, n.Name)
		case !reflect.DeepEqual(old.effective(o), new.effective(n)):
			ch.Changed = append(ch.Changed, n.Name)
		}
	}
	for i := range old.Identities {
		if new.Identity(old.Identities[i].Name) == nil {
			ch.Removed = append(ch.Removed, old.Identities[i].Name)
		}
	}
	all := []struct {
		name string
		a, b any
	}{
		{"pool", old.Pool, new.Pool},
		{"dns", old.DNSAddrs, new.DNSAddrs},
		{"mtu", old.MTU, new.MTU},
		{"proposals", old.Proposals.IKE, new.Proposals.IKE},
		{"proposals", old.Proposals.ESP, new.Proposals.ESP},
		{"dataplane.session_to_session", old.DataPlane.SessionToSession, new.DataPlane.SessionToSession},
		{"radius", old.RADIUS, new.RADIUS},
	}
	for _, x := range all {
		if !reflect.DeepEqual(x.a, x.b) && !slices.Contains(ch.AllSessions, x.name) {
			ch.AllSessions = append(ch.AllSessions, x.name)
		}
	}
	restart := []struct {
		name string
		a, b any
	}{
		{"listen", old.Listen, new.Listen},
		{"dataplane", [3]string{old.DataPlane.Mode, old.DataPlane.TUN, old.DataPlane.TUNDriver}, [3]string{new.DataPlane.Mode, new.DataPlane.TUN, new.DataPlane.TUNDriver}},
		{"dataplane.addresses", old.DataPlane.AddressPrefixes, new.DataPlane.AddressPrefixes},
		{"metrics.listen", old.Metrics.Listen, new.Metrics.Listen},
		{"status.socket", old.Status.Socket, new.Status.Socket},
		{"status_page", old.StatusPage, new.StatusPage},
		{"log", old.Log, new.Log},
		// The tunnel server takes them when the engine starts.
		{"dpd", old.DPD, new.DPD},
		{"lcp_echo", old.LCPEcho, new.LCPEcho},
		{"limits", old.Limits, new.Limits},
		// The speaker starts with the server; its neighbours,
		// communities and next hop follow a reload.
		{"bgp (on/off, local_as, router_id, local_address, next_hop6)", bgpIdentity(old.BGP), bgpIdentity(new.BGP)},
		{"pki.crl_url", [3]string{old.PKI.CRLURL, old.PKI.CRLRefresh, old.PKI.CRLFail}, [3]string{new.PKI.CRLURL, new.PKI.CRLRefresh, new.PKI.CRLFail}},
		{"pki.ocsp_url", [4]any{old.PKI.OCSPURL, old.PKI.OCSPRefresh, old.PKI.OCSPFail, old.PKI.OCSPCacheMax}, [4]any{new.PKI.OCSPURL, new.PKI.OCSPRefresh, new.PKI.OCSPFail, new.PKI.OCSPCacheMax}},
		// The IKE engine takes its identity and certificate when it starts.
		{"gateway_id", old.GatewayID, new.GatewayID},
		{"pki.cert/pki.key", [2]string{old.PKI.Cert, old.PKI.Key}, [2]string{new.PKI.Cert, new.PKI.Key}},
		{"status_page", old.StatusPage, new.StatusPage},
	}
	for _, x := range restart {
		if !reflect.DeepEqual(x.a, x.b) {
			ch.RestartNeeded = append(ch.RestartNeeded, x.name)
		}
	}
	return ch
}

// bgpIdentity is what of the bgp section only a restart can change.
func bgpIdentity(b *BGP) string {
	if b == nil {
		return "off"
	}
	// next_hop6 is fixed when the speaker starts (server.reloadBGP keeps
	// the running one): a reload that changes it says so.
	return fmt.Sprint(b.LocalAS, " ", b.RouterIDAddr, " ", b.LocalAddr, " ", b.NextHop6Addr)
}

// Reload classes of ReloadKeys.
const (
	ReloadApplied  = "applied"  // in force at once for new work (Main Modes, logins, packets)
	ReloadSessions = "sessions" // applied, and every session is closed so it reconnects under it
	ReloadIdentity = "identity" // applied; the sessions of the identities it changes are closed
	ReloadRestart  = "restart"  // kept until a restart; the reload's log line lists it under restart_needed
	ReloadMixed    = "mixed"    // part applied, part restart-only (see the comment)
)

// ReloadKeys says, for every top-level key of the gateway configuration,
// what a reload (SIGHUP) does with it; TestReloadKeysClassified keeps it
// complete and checks the restart-only ones are reported.
var ReloadKeys = map[string]string{
	"listen":       ReloadRestart,
	"gateway_id":   ReloadRestart,
	"proposals":    ReloadSessions, // gateway/engine TestReloadAppliesProposals
	"psk":          ReloadIdentity,
	"identities":   ReloadIdentity,
	"pool":         ReloadSessions,
	"dns":          ReloadSessions,
	"mtu":          ReloadSessions, // gateway/engine TestReloadAppliesMTU
	"push_routes":  ReloadApplied,  // answered from the current configuration (DHCPINFORM)
	"dataplane":    ReloadMixed,    // session_to_session applied (sessions); mode, tun, tun_driver, addresses restart
	"policy":       ReloadIdentity,
	"policies":     ReloadIdentity,
	"sessions":     ReloadIdentity,
	"pacing":       ReloadApplied,
	"limits":       ReloadRestart,
	"auth_backoff": ReloadApplied,
	"dpd":          ReloadRestart,
	"lcp_echo":     ReloadRestart,
	"metrics":      ReloadRestart,
	"status":       ReloadRestart,
	"status_page":  ReloadRestart,
	"radius":       ReloadSessions,
	"bgp":          ReloadMixed, // neighbours, communities, next hop applied; on/off, local_as, router_id, local_address restart
	"import":       ReloadIdentity,
	"pki":          ReloadMixed,   // ca and crl applied (revoked sessions closed); cert, key, crl_url, ocsp_url restart
	"log":          ReloadRestart, // level and format
	"debug":        ReloadApplied, // gateway/engine TestKeylogDecryptsCapture turns debug.keylog_dir off by reload
}
