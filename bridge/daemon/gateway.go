package daemon

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// gatewayCRL is uplink.crl: the CRL of the CA that issues gateway
// certificates, published atomically so that the IKE engine reads it
// under its lock without I/O, and re-read on SIGHUP.
type gatewayCRL struct {
	path string
	ca   *x509.Certificate // uplink.ca's first certificate
	cur  atomic.Pointer[x509.RevocationList]
}

// load reads the file (PEM "X509 CRL" or DER), checks that uplink.ca
// signed it and publishes it; on error the previous CRL stays.
func (g *gatewayCRL) load() error {
	if g.path == "" { // only uplink.crl_url
		return nil
	}
	b, err := os.ReadFile(g.path)
	if err != nil {
		return fmt.Errorf("daemon: uplink.crl: %w", err)
	}
	if err := g.publish(b, g.path); err != nil {
		return fmt.Errorf("daemon: uplink.crl: %w", err)
	}
	return nil
}

// errOlderCRL: a fetched CRL is older than the one in use (a replay, or
// a stale mirror): it is not taken.
var errOlderCRL = errors.New("CRL number older than the one in use")

// publish parses a CRL (PEM "X509 CRL" or DER), checks that uplink.ca
// signed it and that it is not older (CRL number) than the current one,
// and makes it current.
func (g *gatewayCRL) publish(b []byte, from string) error {
	rl, err := pemfile.ParseCRL(b)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	if err := rl.CheckSignatureFrom(g.ca); err != nil {
		return fmt.Errorf("%s is not signed by uplink.ca (%s): %w", from, g.ca.Subject.CommonName, err)
	}
	if cur := g.cur.Load(); cur != nil && cur.Number != nil && rl.Number != nil && rl.Number.Cmp(cur.Number) < 0 {
		return fmt.Errorf("%s: %w (%v < %v)", from, errOlderCRL, rl.Number, cur.Number)
	}
	g.cur.Store(rl)
	return nil
}

func (g *gatewayCRL) get() *x509.RevocationList { return g.cur.Load() }

// pppMethods maps uplink.ppp_methods (validated by config) to ppp's;
// empty keeps the tunnel's default, MS-CHAPv2 only.
func pppMethods(names []string) []ppp.AuthMethod {
	var ms []ppp.AuthMethod
	for _, n := range names {
		switch n {
		case config.MethodMSCHAPv2:
			ms = append(ms, ppp.AuthMSCHAPv2)
		case config.MethodCHAP:
			ms = append(ms, ppp.AuthCHAPMD5)
		case config.MethodPAP:
			ms = append(ms, ppp.AuthPAP)
		}
	}
	return ms
}

// refusal names why an uplink attempt was refused on security grounds
// ("" for other failures): the peer is not the configured gateway, or it
// asked for a PPP method we do not allow.
func refusal(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ike.ErrNotGateway):
		return "not_gateway"
	case errors.Is(err, ppp.ErrAuthMethodRefused):
		return "ppp_method"
	}
	return ""
}
