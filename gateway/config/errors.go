package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every validation error Load and Parse return.
var ErrInvalid = errors.New("config: invalid configuration")

// Error is one problem in a configuration file, located by file and line.
type Error struct {
	File string // file name as given to Load, or "<input>"
	Line int    // 1-based line, 0 when unknown
	Msg  string // what is wrong
}

// Error formats "file:line: message".
func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *Error) Unwrap() error { return ErrInvalid }

// Errors is the list of every problem found; Parse reports all of them at
// once so an operator fixes a file in one pass.
type Errors []*Error

// Error joins all errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
