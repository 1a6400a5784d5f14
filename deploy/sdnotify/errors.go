package sdnotify

import "errors"

// Sentinel errors.
var (
	// ErrEmptyState: Notify was called with nothing to send.
	ErrEmptyState = errors.New("sdnotify: empty state")
	// ErrBadState: a line of the state is not KEY=VALUE.
	ErrBadState = errors.New("sdnotify: state line is not KEY=VALUE")
	// ErrBadSocket: $NOTIFY_SOCKET is neither an absolute path nor "@abstract".
	ErrBadSocket = errors.New("sdnotify: notify socket is neither an absolute path nor @abstract")
)

// Error wraps a socket failure with the operation that failed.
type Error struct {
	Op  string // "dial" or "write"
	Err error
}

func (e *Error) Error() string { return "sdnotify: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }
