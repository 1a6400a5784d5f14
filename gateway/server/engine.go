package server

import (
	"context"
	"net/netip"
	"time"
)

// Engine is the session engine: the IKE responder, ESP transport, L2TP LNS
// and PPP server composed per session. THIS IS WHERE THE PROTOCOL STACK
// PLUGS IN: the daemon (gateway/main.go, newEngine) passes an Engine in
// Options; the Server gives it an *Env with everything gateway-side.
//
// Run must:
//   - bind the listen addresses of env.Config().Listen,
//   - call env.Admission.Allow(src) before Diffie-Hellman work on a new
//     Main Mode, once the peer has proven src (its third message carries
//     our cookie: spoofed sources must not spend anyone's tokens), and
//     env.Metrics.SetupFailed(metrics.PhaseAdmission, ...) if refused,
//   - verify certificates with env.Verifier() and PSKs with env.Config().PSKFor,
//   - authenticate PPP with env.LocalSecret or env.RADIUS,
//   - get the address with env.AssignAddress, then env.Register the
//     session (which installs routes, starts accounting, counts set-up) and
//     feed decapsulated IP packets to env.Router.FromSession; if Register
//     fails (address or route conflict, relogin refused), call
//     env.ReleaseAddress and tear the session down,
//   - call env.Unregister when a session ends,
//   - on ctx cancellation send Delete / StopCCN to every peer so they
//     reconnect at once, then return.
type Engine interface {
	Run(ctx context.Context, env *Env) error
}

// EngineFunc adapts a function to Engine.
type EngineFunc func(ctx context.Context, env *Env) error

// Run calls f.
func (f EngineFunc) Run(ctx context.Context, env *Env) error { return f(ctx, env) }

// Terminator is implemented by sessions the server can close (on reload of
// a changed identity, on relogin replacement). Terminate must not block:
// it starts the teardown (Delete, StopCCN/CDN, LCP Terminate) and the
// engine later calls env.Unregister.
type Terminator interface {
	Terminate(reason string)
}

// Describer is optionally implemented by sessions for `gateway status`.
type Describer interface {
	// OuterAddr is the peer's outer (NAT-T) address.
	OuterAddr() netip.AddrPort
	// Suite names the ESP suite, e.g. "aes128gcm16".
	Suite() string
	// Established is when the session came up.
	Established() time.Time
}

// AccountingInfo is optionally implemented by sessions authenticated by
// RADIUS, so accounting carries the right user, Class and outer address.
type AccountingInfo interface {
	// PPPUser is the PPP user name the session authenticated as.
	PPPUser() string
	// Class is the RADIUS Class attribute from the Access-Accept.
	Class() []byte
}

// Phase1er is implemented by sessions that know what IKE phase 1 proved
// about their peer (the certificate, for revocation).
type Phase1er interface {
	Phase1() Phase1
}

// Hangupper is implemented by sessions that can also end their peer's IKE
// SA, so that a revoked peer cannot open a new session over it.
type Hangupper interface {
	Hangup(reason string)
}
