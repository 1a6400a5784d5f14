package creds

import "errors"

// Sentinel errors.
var (
	// ErrSyntax reports a malformed credentials line.
	ErrSyntax = errors.New("creds: syntax error")
	// ErrDuplicate reports a name defined twice.
	ErrDuplicate = errors.New("creds: duplicate endpoint")
	// ErrNotFound reports a lookup of an unknown endpoint.
	ErrNotFound = errors.New("creds: no credentials for endpoint")
)
