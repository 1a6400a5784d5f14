// Package clientconfig prints ready-to-use client configurations for one
// identity: strongSwan (swanctl.conf, or classic ipsec.conf) + xl2tpd.conf +
// options.xl2tpd for embedded Linux, the Windows PowerShell
// Add-VpnConnection line, MikroTik RouterOS commands, and our own edge
// bridge's YAML uplink section.
//
// The output contains the identity's secrets (PSK, PPP password) because
// that is what the client needs; it is printed to stdout only and never
// logged.
package clientconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/fleetgate/fleetgate/gateway/config"
)

// Formats.
const (
	FormatStrongSwan = "strongswan" // swanctl.conf + xl2tpd.conf + options.xl2tpd
	FormatIPsecConf  = "ipsec"      // ipsec.conf + ipsec.secrets + xl2tpd (legacy starter)
	FormatWindows    = "windows"
	FormatMikroTik   = "mikrotik"
	FormatBridge     = "bridge"
)

// Formats lists the supported formats.
func Formats() []string {
	return []string{FormatStrongSwan, FormatIPsecConf, FormatWindows, FormatMikroTik, FormatBridge}
}

// Errors.
var (
	ErrUnknownFormat   = errors.New("clientconfig: unknown format")
	ErrUnknownIdentity = errors.New("clientconfig: no such identity")
	ErrNoGateway       = errors.New("clientconfig: gateway address is required (--gateway)")
	ErrNoSitePrefix    = errors.New("clientconfig: no site prefix for a bridge")
)

// Params are what a client needs to know.
type Params struct {
	// Gateway is the public name or address clients dial.
	Gateway  string
	Identity config.Identity
	// PSK is the effective pre-shared key (auth psk).
	PSK string
	// IKE and ESP proposals, strongSwan syntax, most preferred first.
	IKE, ESP []string
	// IKEPort and NATTPort as configured (500/4500 unless overridden).
	IKEPort, NATTPort int
	// PushRoutes are the central prefixes the client routes into the VPN.
	PushRoutes []netip.Prefix
	// Name of the connection on the client (default "fleetgate").
	Name string
	// GatewayID is the identity the gateway presents in IKE: gateway_id
	// when configured (ConfiguredID), else the address clients dial (what
	// the gateway presents with a PSK; with certificates pass a
	// subjectAltName of its certificate, --gateway-id).
	GatewayID    string
	ConfiguredID bool
}

// FromConfig builds Params for identity name.
func FromConfig(c *config.Config, name, gateway string) (Params, error) {
	id := c.Identity(name)
	if id == nil {
		return Params{}, fmt.Errorf("%w: %q", ErrUnknownIdentity, name)
	}
	if gateway == "" {
		return Params{}, ErrNoGateway
	}
	p := Params{Gateway: gateway, Identity: *id, IKE: c.Proposals.IKE, ESP: c.Proposals.ESP,
		IKEPort: c.Listen.IKEPort, NATTPort: c.Listen.NATTPort, PushRoutes: id.PushPrefixes, Name: "fleetgate", GatewayID: gateway}
	if c.GatewayID != "" {
		p.GatewayID, p.ConfiguredID = c.GatewayID, true
	}
	if id.Auth == config.AuthPSK {
		p.PSK, _ = c.PSKFor(id.ID)
	}
	return p, nil
}

// Render returns the configuration text in a format.
func Render(format string, p Params) (string, error) {
	if p.Name == "" {
		p.Name = "fleetgate"
	}
	t, ok := templates[format]
	if !ok {
		return "", fmt.Errorf("%w %q (want %s)", ErrUnknownFormat, format, strings.Join(Formats(), ", "))
	}
	if format == FormatBridge && len(p.Identity.RoutePrefixes) == 0 {
		return "", fmt.Errorf("%w: identity %q has no routes: [...] in the gateway config", ErrNoSitePrefix, p.Identity.Name)
	}
	var b strings.Builder
	if err := t.Execute(&b, view{p}); err != nil {
		return "", fmt.Errorf("clientconfig: %w", err)
	}
	return b.String(), nil
}

// view adds template helpers to Params.
type view struct{ Params }

func (v view) Cert() bool { return v.Identity.Auth == config.AuthCert }

// IPsecRightID is GatewayID as ipsec.conf wants it: an FQDN with a leading
// "@" (else the starter resolves it), an address or DN as is.
func (v view) IPsecRightID() string {
	g := v.GatewayID
	if _, err := netip.ParseAddr(g); err == nil || strings.Contains(g, "=") || strings.HasPrefix(g, "@") {
		return g
	}
	return "@" + g
}

// SitePrefix is the first framed route of the identity: the prefix an
// edge bridge hands out to its endpoints (Render refuses the bridge
// format for an identity without one).
func (v view) SitePrefix() string { return v.Identity.RoutePrefixes[0].String() }

// GatewayAddr is the gateway as the bridge's uplink.gateways wants it:
// "host:port" when IKE is not on port 500.
func (v view) GatewayAddr() string {
	if v.IKEPort != 0 && v.IKEPort != 500 {
		return net.JoinHostPort(v.Gateway, strconv.Itoa(v.IKEPort))
	}
	return v.Gateway
}

func (v view) IKEList() string { return strings.Join(v.IKE, ",") }

func (v view) ESPList() string { return strings.Join(v.ESP, ",") }

// LegacyIKE is ipsec.conf syntax: proposals end with "!" (strict).
func (v view) LegacyIKE() string { return strings.Join(v.IKE, ",") + "!" }

// LegacyESP is ipsec.conf syntax.
func (v view) LegacyESP() string { return strings.Join(v.ESP, ",") + "!" }

func (v view) Routes() []string {
	out := make([]string, 0, len(v.PushRoutes))
	for _, r := range v.PushRoutes {
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

// PPPAuthOptions returns pppd options allowing only the identity's methods.
func (v view) PPPAuthOptions() string {
	var refuse []string
	if !v.Identity.PPP.Allows(config.MethodPAP) {
		refuse = append(refuse, "refuse-pap")
	}
	if !v.Identity.PPP.Allows(config.MethodCHAP) {
		refuse = append(refuse, "refuse-chap")
	}
	if !v.Identity.PPP.Allows(config.MethodMSCHAPv2) {
		refuse = append(refuse, "refuse-mschap-v2")
	}
	refuse = append(refuse, "refuse-mschap", "refuse-eap")
	return strings.Join(refuse, "\n")
}

// WindowsAuth is the Add-VpnConnection -AuthenticationMethod value.
func (v view) WindowsAuth() string {
	switch {
	case v.Identity.PPP.Allows(config.MethodMSCHAPv2):
		return "MSChapv2"
	case v.Identity.PPP.Allows(config.MethodCHAP):
		return "Chap"
	}
	return "Pap"
}

// MikroTikAllow is the l2tp-client allow= list.
func (v view) MikroTikAllow() string {
	var a []string
	for _, m := range v.Identity.PPP.Methods {
		switch m {
		case config.MethodMSCHAPv2:
			a = append(a, "mschap2")
		case config.MethodCHAP:
			a = append(a, "chap")
		case config.MethodPAP:
			a = append(a, "pap")
		}
	}
	return strings.Join(a, ",")
}

// MikroTikProposal maps our ESP list to RouterOS enc/auth algorithm lists.
func (v view) MikroTikEnc() string {
	seen := map[string]bool{}
	var out []string
	for _, e := range v.ESP {
		var alg string
		switch {
		case strings.HasPrefix(e, "aes256gcm"):
			alg = "aes-256-gcm"
		case strings.HasPrefix(e, "aes128gcm"):
			alg = "aes-128-gcm"
		case strings.HasPrefix(e, "aes256"):
			alg = "aes-256-cbc"
		case strings.HasPrefix(e, "aes128"):
			alg = "aes-128-cbc"
		case strings.HasPrefix(e, "3des"):
			alg = "3des"
		}
		if alg != "" && !seen[alg] {
			seen[alg] = true
			out = append(out, alg)
		}
	}
	return strings.Join(out, ",")
}

// MikroTikAuth lists the ESP integrity algorithms for RouterOS.
func (v view) MikroTikAuth() string {
	seen := map[string]bool{}
	var out []string
	for _, e := range v.ESP {
		for _, h := range []string{"sha256", "sha1", "sha512"} {
			if strings.Contains(e, "-"+h) && !seen[h] {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	if len(out) == 0 {
		out = []string{"sha256"} // GCM needs none, RouterOS wants one listed
	}
	return strings.Join(out, ",")
}

// Q quotes a value for PowerShell single-quoted strings.
func (v view) Q(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// YQ quotes a value for YAML double-quoted strings.
func (v view) YQ(s string) string { return fmt.Sprintf("%q", s) }

var templates = map[string]*template.Template{
	FormatStrongSwan: template.Must(template.New("strongswan").Parse(strongswanTmpl)),
	FormatIPsecConf:  template.Must(template.New("ipsec").Parse(ipsecTmpl)),
	FormatWindows:    template.Must(template.New("windows").Parse(windowsTmpl)),
	FormatMikroTik:   template.Must(template.New("mikrotik").Parse(mikrotikTmpl)),
	FormatBridge:     template.Must(template.New("bridge").Parse(bridgeTmpl)),
}
