package l2tpipsec

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrClosed means the tunnel or server was closed locally.
	ErrClosed = errors.New("tunnel: closed")
	// ErrConfig means the configuration is incomplete or invalid.
	ErrConfig = errors.New("tunnel: bad configuration")
	// ErrSetupTimeout means a phase did not complete in time.
	ErrSetupTimeout = errors.New("tunnel: setup timed out")
	// ErrIPsecLost means the last IPsec SA with the peer went away (peer
	// Delete, expiry or dead peer detection).
	ErrIPsecLost = errors.New("tunnel: IPsec SA lost")
	// ErrAuthHangup is why the server deletes the IKE SA of a peer that
	// failed PPP authentication.
	ErrAuthHangup = errors.New("tunnel: PPP authentication failed")
	// ErrNotUp means a packet was written before IPCP opened or after the
	// tunnel ended.
	ErrNotUp = errors.New("tunnel: not up")
)

// Phase names a stage of the tunnel's life; failures carry the phase they
// happened in, so operators see "ppp auth" rather than a bare timeout.
type Phase uint8

// Phases, in the order a client walks through them.
const (
	PhaseNone      Phase = iota // nothing started
	PhaseTransport              // binding sockets
	PhaseIKE                    // IKEv1 phase 1 (Main Mode, RFC 2409 §5)
	PhaseQuickMode              // IKEv1 phase 2 (Quick Mode, RFC 2409 §5.5)
	PhaseIPsec                  // established IPsec SA (lost: Delete, expiry, DPD)
	PhaseL2TP                   // L2TP tunnel and session (RFC 2661 §5, §7)
	PhasePPP                    // PPP LCP (RFC 1661)
	PhasePPPAuth                // PPP authentication (PAP, CHAP, MS-CHAPv2)
	PhaseIPCP                   // IPCP (RFC 1332)
	PhaseUp                     // everything up
)

var phaseNames = [...]string{"none", "transport", "ike phase1", "quick mode", "ipsec", "l2tp", "ppp", "ppp auth", "ipcp", "up"}

// String names the phase as logs and metrics show it.
func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// Error is a tunnel failure: the phase it happened in and why.
type Error struct {
	Phase Phase
	Err   error
}

// Error formats "tunnel: <phase>: <reason>".
func (e *Error) Error() string { return "tunnel: " + e.Phase.String() + ": " + e.Err.Error() }

// Unwrap returns the underlying reason.
func (e *Error) Unwrap() error { return e.Err }

// PhaseOf returns the phase an error from this package happened in
// (PhaseNone if it carries none).
func PhaseOf(err error) Phase {
	var te *Error
	if errors.As(err, &te) {
		return te.Phase
	}
	return PhaseNone
}
