package ppp

import (
	"errors"
	"fmt"
)

// Sentinel errors. Codec functions wrap them in *ParseError.
var (
	ErrShort          = errors.New("ppp: frame too short")
	ErrBadLength      = errors.New("ppp: length field out of range")
	ErrBadOption      = errors.New("ppp: malformed option")
	ErrBadPacket      = errors.New("ppp: malformed packet")
	ErrClosed         = errors.New("ppp: closed")
	ErrNotOpen        = errors.New("ppp: IPCP not opened")
	ErrTooBig         = errors.New("ppp: packet exceeds the peer's MRU")
	ErrAuthFailed     = errors.New("ppp: authentication failed")
	ErrAuthRejected   = errors.New("ppp: no acceptable authentication protocol")
	ErrAuthTimeout    = errors.New("ppp: authentication timed out")
	ErrNoAddress      = errors.New("ppp: no address to assign")
	ErrEchoTimeout    = errors.New("ppp: peer stopped answering LCP echo")
	ErrLoopback       = errors.New("ppp: looped-back link detected")
	ErrNegotiation    = errors.New("ppp: negotiation failed")
	ErrPeerTerminated = errors.New("ppp: peer terminated the link")
	ErrLinkDown       = errors.New("ppp: lower layer went down")
	// ErrAuthMethodRefused: the peer asked for an authentication method
	// we do not allow (e.g. PAP from a client configured for MS-CHAPv2
	// only); no credentials were sent.
	ErrAuthMethodRefused = errors.New("ppp: peer asked for an authentication method we do not allow")
	ErrBadServerAuth     = errors.New("ppp: MS-CHAPv2 authenticator response does not verify")
)

// ParseError says where a codec found a problem.
type ParseError struct {
	Offset int
	Field  string
	Err    error
}

// Error returns "ppp: <field> at offset N: <sentinel>".
func (e *ParseError) Error() string {
	return fmt.Sprintf("ppp: %s at offset %d: %v", e.Field, e.Offset, e.Err)
}

// Unwrap returns the sentinel.
func (e *ParseError) Unwrap() error { return e.Err }

func perr(off int, field string, err error) error {
	return &ParseError{Offset: off, Field: field, Err: err}
}
