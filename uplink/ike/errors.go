package ike

import (
	"errors"
	"fmt"
)

// Sentinel errors. Codec functions wrap them in *ParseError.
var (
	ErrShort            = errors.New("ike: message too short")
	ErrBadLength        = errors.New("ike: length field out of range")
	ErrBadVersion       = errors.New("ike: unsupported ISAKMP version")
	ErrBadPayload       = errors.New("ike: malformed payload")
	ErrUnknownPayload   = errors.New("ike: unknown critical payload type")
	ErrBadPadding       = errors.New("ike: bad encrypted message length")
	ErrNoProposalChosen = errors.New("ike: no proposal chosen")
	ErrAuthFailed       = errors.New("ike: authentication failed")
	// ErrKeyNotBound (with ErrAuthFailed): the PSK that verified is not
	// the one bound to the ID the peer presented (Config.PSKForID).
	ErrKeyNotBound       = errors.New("ike: pre-shared key not bound to the ID")
	ErrInvalidID         = errors.New("ike: identity not acceptable")
	ErrInvalidCert       = errors.New("ike: certificate not acceptable")
	ErrNotGateway        = errors.New("ike: peer certificate is not the configured gateway's")
	ErrHashMismatch      = errors.New("ike: hash payload does not verify")
	ErrBadKE             = errors.New("ike: bad key exchange data")
	ErrUnexpected        = errors.New("ike: message not expected in this state")
	ErrTimeout           = errors.New("ike: peer did not answer")
	ErrDeadPeer          = errors.New("ike: dead peer detected")
	ErrRateLimited       = errors.New("ike: rate limited")
	ErrHalfOpenLimit     = errors.New("ike: too many half-open SAs")
	ErrBadProposalString = errors.New("ike: bad proposal string")
	ErrClosed            = errors.New("ike: engine closed")
	ErrNoSA              = errors.New("ike: no such SA")
	ErrPeerNotify        = errors.New("ike: peer sent an error notify")
	ErrPeerDeleted       = errors.New("ike: peer deleted")
)

// ParseError says where a message failed to parse.
type ParseError struct {
	Offset int    // byte offset in the buffer given to the parser
	Field  string // what was being read
	Err    error  // one of the sentinels
}

// Error formats the error with its field and offset.
func (e *ParseError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d", e.Err, e.Field, e.Offset)
}

// Unwrap returns the sentinel.
func (e *ParseError) Unwrap() error { return e.Err }

func perr(off int, field string, err error) error {
	return &ParseError{Offset: off, Field: field, Err: err}
}

// NotifyError is an error the peer reported, or one we report to the peer,
// as an ISAKMP notify type.
type NotifyError struct {
	Type NotifyType
	Err  error
}

// Error formats the error with its notify type.
func (e *NotifyError) Error() string { return fmt.Sprintf("%v (notify %d)", e.Err, e.Type) }

// Unwrap returns the underlying error.
func (e *NotifyError) Unwrap() error { return e.Err }

// notifyFor maps a local failure to the notify we send the peer, and
// whether to send one at all. It is the one place where that decision is
// made (STYLE §8). Authentication failures before the peer proved it holds
// the keys are answered so that honest misconfigured peers learn why; parse
// failures of unauthenticated data are dropped silently.
func notifyFor(err error) (NotifyType, bool) {
	var ne *NotifyError
	switch {
	case errors.As(err, &ne):
		return ne.Type, true
	case errors.Is(err, ErrNoProposalChosen):
		return NotifyNoProposalChosen, true
	case errors.Is(err, ErrAuthFailed), errors.Is(err, ErrHashMismatch):
		return NotifyAuthenticationFailed, true
	case errors.Is(err, ErrInvalidID):
		return NotifyInvalidIDInformation, true
	case errors.Is(err, ErrInvalidCert):
		return NotifyInvalidCertificate, true
	case errors.Is(err, ErrBadKE):
		return NotifyInvalidKeyInfo, true
	case errors.Is(err, ErrBadPayload), errors.Is(err, ErrShort), errors.Is(err, ErrBadLength):
		return NotifyPayloadMalformed, true
	}
	return 0, false
}
