package collector

import "errors"

// Sentinel errors.
var (
	// ErrSeqRange reports a sequence number of 0 or above MaxSeq.
	ErrSeqRange = errors.New("collector: sequence number out of range")
	// ErrTooManyDevices reports more than MaxDevices names.
	ErrTooManyDevices = errors.New("collector: too many devices")
)
