// The PPP authenticator of the server's links, and the context values that
// tell it which IPsec peer and session a request came over.

package l2tpipsec

import (
	"context"
	"net/netip"
	"sync"

	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// linkKey is the context key of the per-link auth values.
type linkKey struct{}

// PeerOuter returns the outer address (IP:port, after the NAT-T float) of
// the client whose PPP link a ServerConfig.Authenticator or AddressFunc
// call is for, e.g. for RADIUS Calling-Station-Id.
func PeerOuter(ctx context.Context) (netip.AddrPort, bool) {
	l, ok := ctx.Value(linkKey{}).(*linkAuth)
	if !ok {
		return netip.AddrPort{}, false
	}
	return l.outer(), true
}

// PeerSession returns the session whose PPP link a ServerConfig
// Authenticator or AddressFunc call is for. Until OnSession hands it over,
// only SetPacketHandler may be used: a handler set while the link
// authenticates gets the client's packets from the moment IPCP opens
// (the client may send before OnSession has run; without a handler those
// packets are dropped).
func PeerSession(ctx context.Context) (*ServerSession, bool) {
	l, ok := ctx.Value(linkKey{}).(*linkAuth)
	if !ok {
		return nil, false
	}
	return l.ss, true
}

// linkAuth is one PPP link's view of the configured Authenticator and
// AddressFunc: their context carries the link (PeerOuter, PeerSession).
// ppp.Conn passes its own per-link context to both calls; the derived
// context is made once per parent, so the two calls of a link see one
// context value (callers may key per-link state by it).
type linkAuth struct {
	auth   ppp.Authenticator
	assign ppp.AddressFunc
	outer  func() netip.AddrPort
	ss     *ServerSession

	mu          sync.Mutex
	parent, ctx context.Context
}

func (l *linkAuth) with(ctx context.Context) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.parent != ctx {
		l.parent, l.ctx = ctx, context.WithValue(ctx, linkKey{}, l)
	}
	return l.ctx
}

// Authenticate implements ppp.Authenticator.
func (l *linkAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	res, err := l.auth.Authenticate(l.with(ctx), req)
	if err == nil && !res.Accept {
		l.ss.rejected.Store(true)
	}
	return res, err
}

// Assign is the link's ppp.AddressFunc.
func (l *linkAuth) Assign(ctx context.Context, user string) (ppp.Assignment, error) {
	return l.assign(l.with(ctx), user)
}
