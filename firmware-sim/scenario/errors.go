package scenario

import "errors"

// ErrInvalid wraps every scenario validation error.
var ErrInvalid = errors.New("scenario: invalid")
