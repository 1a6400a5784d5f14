package ipstack

import "errors"

var (
	// ErrNotIPv4 is returned by InjectInbound for a packet that is not an
	// IPv4 datagram (the PPP link carries IPv4 only, IPCP).
	ErrNotIPv4 = errors.New("ipstack: not an IPv4 packet")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("ipstack: stack closed")
	// ErrNoOutput is returned by New when Config.Output is nil.
	ErrNoOutput = errors.New("ipstack: Config.Output is nil")
	// ErrBadAddress is returned for an address that is not a valid IPv4 address.
	ErrBadAddress = errors.New("ipstack: not a valid IPv4 address")
)
