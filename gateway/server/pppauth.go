package server

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// PPPAuth connects one PPP server link to the gateway's users: it is the
// link's ppp.Authenticator (local users from the configuration and
// chap-secrets first, then RADIUS) and its ppp.AddressFunc (static address,
// RADIUS Framed-IP-Address or the pool, plus DNS). Make one per session
// with Env.NewPPPAuth; after authentication, Identity, Routes and Class
// tell the engine what to register.
type PPPAuth struct {
	env       *Env
	sessionID string
	callingID string

	mu       sync.Mutex
	identity string
	user     string
	res      *radius.Result
}

// NewPPPAuth returns the authenticator for one session; sessionID and
// callingID (the peer's outer address) go into RADIUS requests.
func (e *Env) NewPPPAuth(sessionID, callingID string) *PPPAuth {
	return &PPPAuth{env: e, sessionID: sessionID, callingID: callingID}
}

var methodNames = map[ppp.AuthMethod]string{ppp.AuthPAP: config.MethodPAP, ppp.AuthCHAPMD5: config.MethodCHAP, ppp.AuthMSCHAPv2: config.MethodMSCHAPv2}

// Authenticate implements ppp.Authenticator.
func (a *PPPAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	e := a.env
	method, ok := methodNames[req.Method]
	if !ok {
		e.Metrics.SetupFailed(metrics.PhaseAuth, "method_unsupported")
		return ppp.AuthResult{Message: "authentication failed"}, nil
	}
	if id := e.Config().IdentityByPPPUser(req.Username); id != nil && id.PPP.Password != "" {
		if !id.PPP.Allows(method) {
			e.Metrics.SetupFailed(metrics.PhaseAuth, "method_not_allowed")
			return ppp.AuthResult{Message: "authentication method not allowed"}, nil
		}
		res, err := ppp.LocalUsers{req.Username: id.PPP.Password}.Authenticate(ctx, req)
		if err != nil || !res.Accept {
			e.Metrics.SetupFailed(metrics.PhaseAuth, "bad_credentials")
			return res, err
		}
		a.set(id.Name, req.Username, nil)
		return res, nil
	}
	if e.RADIUS == nil {
		e.Metrics.SetupFailed(metrics.PhaseAuth, "unknown_user")
		return ppp.AuthResult{Message: "authentication failed"}, nil
	}
	rr := radius.Request{Method: method, User: req.Username, SessionID: a.sessionID, CallingID: a.callingID}
	switch req.Method {
	case ppp.AuthPAP:
		rr.Password = string(req.Password)
	case ppp.AuthCHAPMD5:
		rr.CHAPID, rr.CHAPChallenge, rr.CHAPResponse = req.ID, req.Challenge, req.Response
	case ppp.AuthMSCHAPv2:
		rr.MSCHAPIdent, rr.MSCHAPAuthChallenge, rr.MSCHAPPeerChallenge, rr.MSCHAPNTResponse = req.ID, req.Challenge, req.PeerChallenge, req.Response
	}
	res, err := e.RADIUS.Authenticate(ctx, rr)
	if err != nil {
		e.Metrics.SetupFailed(metrics.PhaseAuth, "radius_unreachable")
		return ppp.AuthResult{}, err
	}
	if !res.Accept {
		e.Metrics.SetupFailed(metrics.PhaseAuth, "radius_reject")
		return ppp.AuthResult{Message: orDefault(res.ReplyMessage, "authentication failed")}, nil
	}
	if req.Method == ppp.AuthMSCHAPv2 && res.MSCHAP2Success == "" {
		// Without the authenticator response the client cannot verify us.
		e.Metrics.SetupFailed(metrics.PhaseAuth, "radius_no_mschap2_success")
		return ppp.AuthResult{Message: "authentication failed"}, nil
	}
	a.set(req.Username, req.Username, res)
	return ppp.AuthResult{Accept: true, AuthenticatorResponse: res.MSCHAP2Success, Message: orDefault(res.ReplyMessage, "welcome")}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (a *PPPAuth) set(identity, user string, res *radius.Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.identity, a.user, a.res = identity, user, res
}

// ErrNotAuthenticated is returned by Assign before a successful Authenticate.
var ErrNotAuthenticated = errors.New("server: PPP peer not authenticated")

// Assign implements ppp.AddressFunc: the identity's static address, else
// RADIUS Framed-IP-Address, else the pool; DNS from the configuration.
// The engine releases it with Env.ReleaseAddress (Unregister does).
func (a *PPPAuth) Assign(_ context.Context, _ string) (ppp.Assignment, error) {
	a.mu.Lock()
	identity, res := a.identity, a.res
	a.mu.Unlock()
	if identity == "" {
		return ppp.Assignment{}, ErrNotAuthenticated
	}
	var framed netip.Addr
	if res != nil {
		framed = res.FramedIP
	}
	addr, err := a.env.AssignAddress(identity, framed)
	if err != nil {
		a.env.Metrics.SetupFailed(metrics.PhaseIPCP, "no_address")
		return ppp.Assignment{}, err
	}
	as := ppp.Assignment{Addr: addr}
	for i, d := range a.env.Config().DNSAddrs {
		if i < len(as.DNS) {
			as.DNS[i] = d
		}
	}
	return as, nil
}

// Identity is the authenticated identity ("" before success): the
// configured identity name, or the RADIUS user name.
func (a *PPPAuth) Identity() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.identity
}

// PPPUser is the PPP user name that authenticated.
func (a *PPPAuth) PPPUser() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.user
}

// Routes are the session's framed routes: the configured ones plus RADIUS
// Framed-Route.
func (a *PPPAuth) Routes() []netip.Prefix {
	a.mu.Lock()
	identity, res := a.identity, a.res
	a.mu.Unlock()
	out := append([]netip.Prefix(nil), a.env.Routes(identity)...)
	if res != nil {
		out = append(out, res.FramedRoutes...)
	}
	return out
}

// Class is the RADIUS Class to echo in accounting (nil for local users).
func (a *PPPAuth) Class() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.res == nil {
		return nil
	}
	return a.res.Class
}

var (
	_ ppp.Authenticator = (*PPPAuth)(nil)
	_ ppp.AddressFunc   = (*PPPAuth)(nil).Assign
	_ AccountingInfo    = (*PPPAuth)(nil)
)
