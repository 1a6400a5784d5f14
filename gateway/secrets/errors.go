package secrets

import (
	"errors"
	"fmt"
)

// ErrSyntax is wrapped by every *ParseError.
var ErrSyntax = errors.New("secrets: syntax error")

// ParseError locates a problem in a secrets file. It never contains the
// secret itself.
type ParseError struct {
	Line int
	Msg  string
}

// Error formats the line and message.
func (e *ParseError) Error() string { return fmt.Sprintf("secrets: line %d: %s", e.Line, e.Msg) }

// Unwrap lets errors.Is(err, ErrSyntax) match.
func (e *ParseError) Unwrap() error { return ErrSyntax }
