package netns

import "errors"

// ErrNoHost is returned (wrapped) when a host name is not in the topology.
var ErrNoHost = errors.New("netns: no such host")

// ErrNotNAT is returned when a NAT operation is asked of a topology built
// without Options.NAT.
var ErrNotNAT = errors.New("netns: topology has no nat host")
