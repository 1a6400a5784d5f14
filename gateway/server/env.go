package server

import (
	"crypto/md5"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/gateway/admission"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/metrics"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/gateway/route"
)

// Session is the gateway's view of one session (see route.Session).
type Session = route.Session

// Env is what the session engine gets from the server.
type Env struct {
	// Sessions is the session table.
	Sessions *route.Table
	// Router moves IP packets; call Router.FromSession with every packet
	// decapsulated from a session.
	Router *dataplane.Router
	// Admission paces new Main Modes.
	Admission *admission.Limiter
	// Metrics takes set-up, rekey, DPD and LCP events.
	Metrics *metrics.Gateway
	// RADIUS is nil unless configured.
	RADIUS *radius.Client
	// Log is the daemon's logger.
	Log *slog.Logger

	srv *Server
}

// Backoff is the failed-login backoff (auth_backoff): the engine records
// IKE authentication failures in it and checks a new Main Mode's source.
func (e *Env) Backoff() *Backoff { return e.srv.bo }

func (e *Env) backoff() *Backoff { return e.srv.bo }

// Ready tells the service manager (systemd Type=notify) that the gateway
// serves: the engine calls it once its IKE and NAT-T sockets are bound.
// Calls after the first do nothing.
func (e *Env) Ready() { e.srv.ready() }

// OnReload registers fn to run on every reload, with the new
// configuration, after it is in force (Env.Config returns it) and before
// the affected sessions are closed: what fn applies is what their peers
// meet when they reconnect. fn must not block.
func (e *Env) OnReload(fn func(*config.Config)) {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	e.srv.reloadHooks = append(e.srv.reloadHooks, fn)
}

// Config returns the current configuration (it changes on reload).
func (e *Env) Config() *config.Config { return e.srv.cfg.Load() }

// Verifier returns the current certificate verifier, or nil when no CA is
// configured.
func (e *Env) Verifier() *pki.Verifier { return e.srv.verifier.Load() }

// ErrNoIdentity is returned by IdentityForCert when no cert identity
// matches the certificate.
var ErrNoIdentity = errors.New("server: no certificate identity matches")

// IdentityForCert verifies a peer certificate (chain to the CA, CRL, OCSP) and
// returns the identity with auth cert whose IKE ID is one of the
// certificate's names (CN, DNS/IP/email SANs). peerID, when not empty, is
// the ID payload the peer sent; it must be one of those names too.
func (e *Env) IdentityForCert(leaf *x509.Certificate, intermediates []*x509.Certificate, peerID string) (*config.Identity, error) {
	v := e.Verifier()
	if v == nil {
		return nil, errors.New("server: no CA configured (pki.ca)")
	}
	names, err := v.Verify(leaf, intermediates, e.srv.now())
	if err != nil {
		return nil, err
	}
	if err := e.srv.checkOCSP(leaf); err != nil {
		return nil, err
	}
	if peerID != "" && !contains(names, peerID) {
		return nil, fmt.Errorf("%w: ID payload %q is not a name of the certificate", ErrNoIdentity, peerID)
	}
	cfg := e.Config()
	for _, n := range names {
		if id := cfg.IdentityByIKEID(n); id != nil && id.Auth == config.AuthCert {
			return id, nil
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrNoIdentity, names)
}

// ErrAuth is returned by CheckLocal for a wrong password or unknown user.
var ErrAuth = errors.New("server: authentication failed")

// LocalSecret returns the identity and PPP password of a local user (from
// the YAML or an imported chap-secrets), for the PPP server's CHAP and
// MS-CHAPv2 computations. ok is false for unknown users (try RADIUS).
func (e *Env) LocalSecret(user string) (identity, password string, methods []string, ok bool) {
	id := e.Config().IdentityByPPPUser(user)
	if id == nil || id.PPP.Password == "" {
		return "", "", nil, false
	}
	return id.Name, id.PPP.Password, id.PPP.Methods, true
}

// CheckPAP checks a PAP password against local users in constant time.
func (e *Env) CheckPAP(user, password string) (identity string, err error) {
	name, pw, methods, ok := e.LocalSecret(user)
	if !ok || !contains(methods, config.MethodPAP) || subtle.ConstantTimeCompare([]byte(pw), []byte(password)) != 1 {
		return "", ErrAuth
	}
	return name, nil
}

// CheckCHAP checks a CHAP-MD5 response (RFC 1994 §4.1: MD5(id || secret ||
// challenge)) against local users.
func (e *Env) CheckCHAP(user string, id byte, challenge, response []byte) (identity string, err error) {
	name, pw, methods, ok := e.LocalSecret(user)
	if !ok || !contains(methods, config.MethodCHAP) {
		return "", ErrAuth
	}
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(pw))
	h.Write(challenge)
	if subtle.ConstantTimeCompare(h.Sum(nil), response) != 1 {
		return "", ErrAuth
	}
	return name, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// AssignAddress picks the VPN address of a new session: the identity's
// static address, else the RADIUS Framed-IP-Address (framedIP, may be
// invalid), else one from the pool (sticky per identity).
func (e *Env) AssignAddress(identity string, framedIP netip.Addr) (netip.Addr, error) {
	if id := e.Config().Identity(identity); id != nil && id.Addr.IsValid() {
		return id.Addr, nil
	}
	p := e.srv.pool.Load()
	if framedIP.IsValid() {
		if err := p.Claim(identity, framedIP); err != nil {
			return netip.Addr{}, fmt.Errorf("server: Framed-IP-Address %s: %w", framedIP, err)
		}
		return framedIP, nil
	}
	return p.Allocate(identity)
}

// ReleaseAddress returns an address from AssignAddress (static and
// foreign addresses are ignored).
func (e *Env) ReleaseAddress(a netip.Addr) { e.srv.pool.Load().Release(a) }

// Routes returns the framed routes of identity from the configuration (the
// engine adds RADIUS Framed-Route prefixes itself).
func (e *Env) Routes(identity string) []netip.Prefix {
	if id := e.Config().Identity(identity); id != nil {
		return id.RoutePrefixes
	}
	return nil
}

// IPv6Prefix returns identity's IPv6 site prefix (invalid: none, the
// link is IPv4 only).
func (e *Env) IPv6Prefix(identity string) netip.Prefix {
	if id := e.Config().Identity(identity); id != nil {
		return id.IPv6
	}
	return netip.Prefix{}
}

// PushRoutes returns the central prefixes to push to identity (bridge
// config, DHCPINFORM options 121/249).
func (e *Env) PushRoutes(identity string) []netip.Prefix {
	c := e.Config()
	if id := c.Identity(identity); id != nil {
		return id.PushPrefixes
	}
	return c.PushPrefixes
}

// Replace reports whether a relogin of identity replaces its old session.
func (e *Env) Replace(identity string) bool {
	c := e.Config()
	if id := c.Identity(identity); id != nil && id.ReplaceSession != nil {
		return *id.ReplaceSession
	}
	return c.Sessions.Replace()
}

// sessionState is what the server keeps per registered session.
type sessionState struct {
	sess       Session
	start      time.Time
	rx0, tx0   uint64 // identity byte counters at start (router counters are per identity)
	rxp0, txp0 uint64
	user       string
	class      []byte
	outer      string
}

// Register adds an established session: session table (replacing an old
// session of the same identity if configured; the old one is terminated),
// TUN routes for its framed routes, accounting Start, set-up metrics.
func (e *Env) Register(s Session) error {
	s2 := e.srv
	old, err := e.Sessions.Add(s, e.Replace(s.Identity()))
	if err != nil {
		e.Metrics.SetupFailed(metrics.PhaseSession, reasonOf(err))
		return err
	}
	e.Metrics.SetupOK(s.Identity())
	if old != nil {
		e.Metrics.Reconnect(s.Identity())
		e.Log.Info("session replaced by relogin", "identity", s.Identity(), "old_session_id", old.ID(), "session_id", s.ID())
		s2.finish(old, radius.CauseAdminReset)
		if t, ok := old.(Terminator); ok {
			t.Terminate("replaced by a new login")
		}
	} else if s2.seen(s.Identity()) {
		e.Metrics.Reconnect(s.Identity())
	}
	s2.addRoutes(s)
	s2.announce(s)
	c := e.Router.Identity(s.Identity())
	st := &sessionState{sess: s, start: s2.now(), rx0: c.RxBytes.Load(), tx0: c.TxBytes.Load(), rxp0: c.RxPackets.Load(), txp0: c.TxPackets.Load(), user: s.Identity()}
	if ai, ok := s.(AccountingInfo); ok {
		st.user, st.class = ai.PPPUser(), ai.Class()
	}
	if d, ok := s.(Describer); ok {
		st.outer = d.OuterAddr().String() // IP:port, as in Access-Request
	}
	s2.mu.Lock()
	s2.states[s.ID()] = st
	s2.mu.Unlock()
	peer := peerid.Unknown
	if pi, ok := s.(PeerImplementer); ok && peerid.Valid(peerid.Kind(pi.PeerImplementation())) {
		peer = peerid.Kind(pi.PeerImplementation())
	}
	e.Metrics.SetupPeer(string(peer))
	e.Log.Info("session established", "session_id", s.ID(), "identity", s.Identity(), "vpn_addr", s.Addr(), "routes", s.Routes(), "mtu", s.MTU(), "peer_impl", peer)
	s2.account(st, radius.AcctStart, 0)
	return nil
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, route.ErrAddrInUse):
		return "address_in_use"
	case errors.Is(err, route.ErrRouteInUse):
		return "route_in_use"
	case errors.Is(err, route.ErrLoggedIn):
		return "already_logged_in"
	case errors.Is(err, route.ErrDuplicate):
		return "duplicate_id"
	}
	return "other"
}

// Unregister removes an ended session, releases its pool address, stops
// accounting. cause is a RADIUS Acct-Terminate-Cause (radius.Cause*).
func (e *Env) Unregister(s Session, cause int) {
	if e.Sessions.Remove(s) {
		e.srv.delRoutes(s)
		e.srv.clearFilter(s.Identity())
	}
	e.srv.withdraw(s)
	e.srv.finish(s, cause)
	e.ReleaseAddress(s.Addr())
	e.ReleaseIPv6(s.Identity(), sessionIPv6(s))
}

// counter for unique session IDs.
var nextID atomic.Uint64

// NewSessionID returns a process-unique session ID.
func NewSessionID() uint64 { return nextID.Add(1) }

// seenSet remembers identities that had a session before (for reconnect
// counting).
type seenSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *seenSet) markSeen(identity string) (before bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]bool{}
	}
	before = s.m[identity]
	s.m[identity] = true
	return before
}
