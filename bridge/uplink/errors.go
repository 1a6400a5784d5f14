package uplink

import "errors"

// ErrDown means no tunnel is up at the moment: the packet was not sent.
var ErrDown = errors.New("uplink: down")
