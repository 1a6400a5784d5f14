package l2tp

import (
	"errors"
	"fmt"
)

// Sentinel errors. Codec functions wrap them in *ParseError.
var (
	ErrShort            = errors.New("l2tp: message too short")
	ErrBadLength        = errors.New("l2tp: length field out of range")
	ErrBadVersion       = errors.New("l2tp: not L2TP version 2")
	ErrBadFlags         = errors.New("l2tp: invalid header flags")
	ErrBadAVP           = errors.New("l2tp: malformed AVP")
	ErrUnknownMandatory = errors.New("l2tp: unknown mandatory AVP")
	ErrHidden           = errors.New("l2tp: cannot unhide AVP")
	ErrNoMessageType    = errors.New("l2tp: control message without Message Type AVP")
	ErrTooLong          = errors.New("l2tp: message too long")
	ErrMissingAVP       = errors.New("l2tp: required AVP missing")
	ErrClosed           = errors.New("l2tp: closed")
	ErrTimeout          = errors.New("l2tp: peer did not acknowledge")
	ErrSetupTimeout     = errors.New("l2tp: setup timed out")
	ErrAuthFailed       = errors.New("l2tp: tunnel authentication failed")
	ErrPeerStop         = errors.New("l2tp: peer closed the control connection")
	ErrPeerCDN          = errors.New("l2tp: peer disconnected the call")
	ErrTooMany          = errors.New("l2tp: too many tunnels or sessions")
	ErrNotEstablished   = errors.New("l2tp: not established")
	ErrFSM              = errors.New("l2tp: message not expected in this state")
	ErrFrameTooLarge    = errors.New("l2tp: frame too large")
)

// ParseError says where a codec found a problem.
type ParseError struct {
	Offset int    // byte offset in the input
	Field  string // what was being parsed
	Err    error  // one of the sentinel errors
}

// Error returns "l2tp: <field> at offset N: <sentinel>".
func (e *ParseError) Error() string {
	return fmt.Sprintf("l2tp: %s at offset %d: %v", e.Field, e.Offset, e.Err)
}

// Unwrap returns the sentinel.
func (e *ParseError) Unwrap() error { return e.Err }

func perr(off int, field string, err error) error {
	return &ParseError{Offset: off, Field: field, Err: err}
}

// ResultError is a tunnel or session close reason carrying the RFC 2661
// result and error codes (from a StopCCN or CDN, ours or the peer's).
type ResultError struct {
	Err     error  // ErrPeerStop, ErrPeerCDN, ErrTimeout, ...
	Result  uint16 // result code
	Code    uint16 // error code
	Message string // optional error message
}

// Error describes the close reason.
func (e *ResultError) Error() string {
	s := fmt.Sprintf("%v (result %d, error %d)", e.Err, e.Result, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the underlying sentinel.
func (e *ResultError) Unwrap() error { return e.Err }
