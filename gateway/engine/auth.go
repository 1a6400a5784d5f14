package engine

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// authMux gives every PPP link its own server.PPPAuth although
// l2tpipsec.ServerConfig takes one Authenticator and one AddressFunc for all
// links. ppp.Conn calls both with its own per-link context, one after the
// other (Authenticate, then AddressFunc on accept), so the context ties the
// two calls together; the assigned address then ties the PPPAuth to the
// l2tpipsec.ServerSession handed to OnSession. A link that ends before IPCP
// opens gives its address back when its context is cancelled.
type authMux struct {
	env   *server.Env
	stats *Stats

	mu     sync.Mutex
	byKey  map[any]*pending        // per-link context (or user name)
	byAddr map[netip.Addr]*pending // assigned, waiting for OnSession
}

// pending is one authenticated link on its way to IPCP.
type pending struct {
	id      uint64
	auth    *server.PPPAuth
	key     any
	addr    netip.Addr
	claimed bool
	// hold is the link's packet handler from address assignment until the
	// session is registered (tunnel links; raw links get theirs at attach).
	hold *inbox
}

func newAuthMux(env *server.Env, st *Stats) *authMux {
	return &authMux{env: env, stats: st, byKey: map[any]*pending{}, byAddr: map[netip.Addr]*pending{}}
}

// linkKey is the per-link context when it can be cancelled (ppp.Conn's),
// else the user name.
func linkKey(ctx context.Context, user string) any {
	if ctx.Done() == nil {
		return "user:" + user
	}
	return ctx
}

// Authenticate implements ppp.Authenticator for links of the tunnel
// server, which puts the peer's outer address in ctx.
func (m *authMux) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	calling := ""
	if outer, ok := l2tpipsec.PeerOuter(ctx); ok {
		calling = outer.String()
	}
	// The phase 1 identity travels with the link: the login must be for it.
	p1 := server.Phase1{None: true}
	if ss, ok := l2tpipsec.PeerSession(ctx); ok {
		p1 = server.Phase1Of(ss.Identity())
	}
	return m.authenticate(ctx, req, calling, p1)
}

// authenticate checks a login; calling is the peer's outer IP:port, sent
// as RADIUS Calling-Station-Id as xl2tpd and accel-ppp do; p1 is what
// IKE phase 1 proved about the peer.
func (m *authMux) authenticate(ctx context.Context, req *ppp.AuthRequest, calling string, p1 server.Phase1) (ppp.AuthResult, error) {
	id := server.NewSessionID()
	a := m.env.NewPPPAuth(strconv.FormatUint(id, 16), calling, p1)
	res, err := a.Authenticate(ctx, req)
	if err != nil || !res.Accept {
		return res, err
	}
	p := &pending{id: id, auth: a, key: linkKey(ctx, req.Username)}
	m.mu.Lock()
	m.byKey[p.key] = p
	m.mu.Unlock()
	if ctx.Done() != nil {
		context.AfterFunc(ctx, func() { m.drop(p) })
	}
	return res, nil
}

// Assign implements ppp.AddressFunc for the link Authenticate accepted.
func (m *authMux) Assign(ctx context.Context, user string) (ppp.Assignment, error) {
	m.mu.Lock()
	p := m.byKey[linkKey(ctx, user)]
	m.mu.Unlock()
	if p == nil {
		return ppp.Assignment{}, ErrNoPending
	}
	asg, err := p.auth.Assign(ctx, user)
	if err != nil {
		return asg, fmt.Errorf("engine: assign address for %q: %w", user, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byKey[p.key] != p { // the link went away meanwhile
		m.env.ReleaseAddress(asg.Addr)
		p.auth.ReleaseIPv6()
		return ppp.Assignment{}, ErrNoPending
	}
	if old := m.byAddr[asg.Addr]; old != nil && old != p {
		old.addr = netip.Addr{} // a relogin with the same static address
	}
	p.addr = asg.Addr
	m.byAddr[asg.Addr] = p
	// From here our IPCP can Configure-Ack this address, and the client
	// may send the moment it has that Ack: hold its packets until the
	// session is registered.
	if ss, ok := l2tpipsec.PeerSession(ctx); ok && p.hold == nil {
		p.hold = newInbox(m.stats)
		ss.SetPacketHandler(p.hold.deliver)
	}
	return asg, nil
}

// claim hands the PPPAuth of the link that got addr to its session.
func (m *authMux) claim(addr netip.Addr) *pending {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.byAddr[addr]
	if p == nil {
		return nil
	}
	delete(m.byAddr, addr)
	if m.byKey[p.key] == p {
		delete(m.byKey, p.key)
	}
	p.claimed = true
	return p
}

// drop forgets a link that ended; its address goes back to the pool unless
// a session took it over.
func (m *authMux) drop(p *pending) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.claimed {
		return
	}
	if m.byKey[p.key] == p {
		delete(m.byKey, p.key)
	}
	if p.addr.IsValid() && m.byAddr[p.addr] == p {
		delete(m.byAddr, p.addr)
		m.env.ReleaseAddress(p.addr)
		p.auth.ReleaseIPv6()
		m.stats.OrphanAuth.Add(1)
	}
	if p.hold != nil {
		p.hold.close()
	}
}

// rawAuth is the Authenticator of one raw L2TP link, whose peer address
// the listener knows.
type rawAuth struct {
	m       *authMux
	calling string
}

// Authenticate implements ppp.Authenticator.
func (r rawAuth) Authenticate(ctx context.Context, req *ppp.AuthRequest) (ppp.AuthResult, error) {
	return r.m.authenticate(ctx, req, r.calling, server.Phase1{None: true})
}
