package engine

import "errors"

// Sentinel errors.
var (
	// ErrListen means a listen address could not be bound.
	ErrListen = errors.New("engine: cannot bind listen address")
	// ErrConfig means the gateway configuration cannot drive the engine
	// (bad proposal string, unreadable gateway certificate or key).
	ErrConfig = errors.New("engine: bad configuration")
	// ErrNoPending means PPP asked for an address for a link the engine did
	// not authenticate (should not happen).
	ErrNoPending = errors.New("engine: address requested before authentication")
)
