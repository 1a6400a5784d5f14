package device

import "errors"

// ErrConfig reports an unusable device configuration.
var ErrConfig = errors.New("device: bad config")
