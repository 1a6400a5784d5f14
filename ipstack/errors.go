package ipstack

import "errors"

var (
	// ErrNotIPv4 is returned by InjectInbound for a packet that is
	// neither IPv4 nor IPv6 (version nibble, or shorter than a header).
	ErrNotIPv4 = errors.New("ipstack: not an IPv4 packet")
	// ErrMalformed is returned by InjectInbound for an IPv6 packet whose
	// payload length does not fit the packet (or is 0: no jumbograms).
	ErrMalformed = errors.New("ipstack: malformed IPv6 packet")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("ipstack: stack closed")
	// ErrNoOutput is returned by New when Config.Output is nil.
	ErrNoOutput = errors.New("ipstack: Config.Output is nil")
	// ErrBadAddress is returned for an address that is not valid (or of
	// the wrong family for the call).
	ErrBadAddress = errors.New("ipstack: not a valid address")
)
