package server

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

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
	phase1    Phase1
	src       netip.Addr

	mu       sync.Mutex
	identity string
	user     string
	res      *radius.Result
	ipv6     netip.Prefix // from Assign (AssignIPv6)
}

// NewPPPAuth returns the authenticator for one session; sessionID and
// callingID (the peer's outer IP:port) go into RADIUS requests; phase1 is
// what IKE proved about the peer: the login must be for that identity
// (BindPPP, BindRADIUS).
func (e *Env) NewPPPAuth(sessionID, callingID string, phase1 Phase1) *PPPAuth {
	a := &PPPAuth{env: e, sessionID: sessionID, callingID: callingID, phase1: phase1}
	if ap, err := netip.ParseAddrPort(callingID); err == nil {
		a.src = ap.Addr().Unmap()
	}
	return a
}

var methodNames = map[ppp.AuthMethod]string{ppp.AuthPAP: config.MethodPAP, ppp.AuthCHAPMD5: config.MethodCHAP, ppp.AuthMSCHAPv2: config.MethodMSCHAPv2}

var errRefused = ppp.AuthResult{Message: "authentication failed"}

// Authenticate implements ppp.Authenticator. In order: failure backoff
// for the source and the identity; the method; the phase 1 binding
// (before the password is looked at, so a shared-PSK peer learns nothing
// about another identity's password); then the credentials.
func (a *PPPAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	e := a.env
	cfg := e.Config()
	method, ok := methodNames[req.Method]
	if !ok {
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "method_unsupported")
		return errRefused, nil
	}
	id := cfg.IdentityByPPPUser(req.Username)
	if id != nil && id.PPP.Password == "" {
		id = nil // RADIUS authenticates it
	}
	who := req.Username
	if id != nil {
		who = id.Name
	}
	if w := e.backoff().Check(a.src, who); w > 0 {
		e.Metrics.Refused(metrics.CheckAuthBackoff)
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "backoff")
		e.Log.Warn("PPP login refused: too many failed logins, backing off", "peer", a.callingID, "user", req.Username,
			"identity", who, "retry_after", w.Round(time.Second))
		return errRefused, nil
	}
	if id != nil {
		if !id.PPP.Allows(method) {
			e.Metrics.Refused(metrics.CheckMethodForbidden)
			e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "method_not_allowed")
			e.backoff().Failed(a.src, id.Name)
			return ppp.AuthResult{Message: "authentication method not allowed"}, nil
		}
		if err := BindPPP(cfg, a.phase1, id); err != nil {
			a.mismatch(req.Username, id.Name, err)
			return errRefused, nil
		}
		res, err := ppp.LocalUsers{req.Username: id.PPP.Password}.Authenticate(ctx, req)
		if err != nil || !res.Accept {
			e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "bad_credentials")
			e.backoff().Failed(a.src, id.Name)
			return res, err
		}
		e.backoff().Succeeded(a.src, id.Name)
		a.set(id.Name, req.Username, nil)
		return res, nil
	}
	if e.RADIUS == nil {
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "unknown_user")
		e.backoff().Failed(a.src, "")
		return errRefused, nil
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
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "radius_unreachable")
		return ppp.AuthResult{}, err
	}
	if !res.Accept {
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "radius_reject")
		e.backoff().Failed(a.src, req.Username)
		return ppp.AuthResult{Message: orDefault(res.ReplyMessage, "authentication failed")}, nil
	}
	var boundTo []string
	if cfg.RADIUS != nil && cfg.RADIUS.Phase1IDAttribute == "Filter-Id" {
		boundTo = res.FilterIDs
	}
	if err := BindRADIUS(cfg, a.phase1, req.Username, boundTo); err != nil {
		a.mismatch(req.Username, req.Username, err)
		return errRefused, nil
	}
	if req.Method == ppp.AuthMSCHAPv2 && res.MSCHAP2Success == "" {
		// Without the authenticator response the client cannot verify us.
		e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, req.Username, "radius_no_mschap2_success")
		return errRefused, nil
	}
	e.backoff().Succeeded(a.src, req.Username)
	a.set(req.Username, req.Username, res)
	return ppp.AuthResult{Accept: true, AuthenticatorResponse: res.MSCHAP2Success, Message: orDefault(res.ReplyMessage, "welcome")}, nil
}

// mismatch refuses a login for another identity than phase 1 proved:
// logged with both identities, counted, and a failure for the backoff.
func (a *PPPAuth) mismatch(user, identity string, err error) {
	e := a.env
	e.Metrics.Refused(metrics.CheckPPPIdentity)
	e.Metrics.SetupFailedBy(metrics.PhaseAuth, a.callingID, user, "identity_mismatch")
	e.Log.Warn("PPP login refused: not the identity phase 1 authenticated", "peer", a.callingID,
		"phase1_identity", a.phase1.String(), "ppp_user", user, "ppp_identity", identity, "err", err)
	e.backoff().Failed(a.src, identity)
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
	// An identity with an IPv6 site prefix (static, RADIUS, the /64 pool)
	// is offered IPV6CP.
	var fromRADIUS netip.Prefix
	if res != nil {
		fromRADIUS = res.IPv6Prefix
	}
	pf6, err := a.env.AssignIPv6(identity, fromRADIUS)
	if err != nil { // the pool is full (counted: fleetgate_pool6_exhausted_total): IPv4 only
		a.env.Log.Warn("no IPv6 prefix for the session: IPv4 only", "identity", identity, "err", err)
	}
	a.mu.Lock()
	if a.ipv6.IsValid() { // a second IPCP round: the earlier prefix goes back
		a.env.ReleaseIPv6(identity, a.ipv6)
	}
	a.ipv6 = pf6
	a.mu.Unlock()
	as.IPv6 = pf6.IsValid()
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

// IPv6Prefix is the session's IPv6 site prefix from Assign (invalid:
// IPv4 only).
func (a *PPPAuth) IPv6Prefix() netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ipv6
}

// ReleaseIPv6 gives back the prefix Assign took, for a link that ends
// before its session registers.
func (a *PPPAuth) ReleaseIPv6() {
	a.mu.Lock()
	pf, identity := a.ipv6, a.identity
	a.ipv6 = netip.Prefix{}
	a.mu.Unlock()
	a.env.ReleaseIPv6(identity, pf)
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
