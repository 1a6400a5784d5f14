package l2tpipsec_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// countingAuth counts the authentication requests a server received and
// how many carried a cleartext (PAP) password.
type countingAuth struct {
	ppp.Authenticator
	requests, passwords atomic.Int64
}

func (a *countingAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	a.requests.Add(1)
	if len(req.Password) > 0 {
		a.passwords.Add(1)
	}
	return a.Authenticator.Authenticate(ctx, req)
}

// TestClientDefaultRefusesWeakMethods: with the default methods the
// client answers a server that asks for PAP (or CHAP-MD5) with a Nak for
// MS-CHAPv2 and never sends a password; the set-up fails in PPP. Opting
// in to PAP still works.
func TestClientDefaultRefusesWeakMethods(t *testing.T) {
	for _, tt := range []struct {
		name    string
		server  []ppp.AuthMethod
		client  []ppp.AuthMethod
		wantErr bool
	}{
		{"server asks PAP", []ppp.AuthMethod{ppp.AuthPAP}, nil, true},
		{"server asks CHAP-MD5", []ppp.AuthMethod{ppp.AuthCHAPMD5}, nil, true},
		{"PAP opted in", []ppp.AuthMethod{ppp.AuthPAP}, []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthPAP}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			auth := &countingAuth{Authenticator: ppp.LocalUsers{l2tpipsectest.User: l2tpipsectest.Password}}
			_, err := l2tpipsectest.Start(t, l2tpipsectest.Options{
				Client: func(c *l2tpipsec.ClientConfig) { c.AuthMethods = tt.client },
				Server: func(c *l2tpipsec.ServerConfig) { c.AuthMethods, c.Authenticator = tt.server, auth },
			})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("opted-in PAP: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Dial succeeded against a server asking for a weak method")
			}
			if ph := l2tpipsec.PhaseOf(err); ph != l2tpipsec.PhasePPP || !errors.Is(err, ppp.ErrAuthMethodRefused) {
				t.Fatalf("failed in %v (%v), want PPP with ErrAuthMethodRefused", ph, err)
			}
			if n := auth.requests.Load(); n != 0 {
				t.Fatalf("server received %d authentication requests (%d with a password), want none", n, auth.passwords.Load())
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
}
