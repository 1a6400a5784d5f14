package senml

import "errors"

// Sentinel errors returned by the decoders and validators.
var (
	// ErrTooLarge reports an encoded pack above MaxPackBytes or with more
	// than MaxRecords records.
	ErrTooLarge = errors.New("senml: pack too large")
	// ErrEmpty reports a pack with no records.
	ErrEmpty = errors.New("senml: empty pack")
	// ErrSyntax reports input that is not a JSON or CBOR array of maps.
	ErrSyntax = errors.New("senml: malformed pack")
	// ErrName reports a missing or invalid resolved name (RFC 8428 §4.5.1).
	ErrName = errors.New("senml: invalid record name")
	// ErrValue reports a record with more than one value field or a
	// non-finite number.
	ErrValue = errors.New("senml: invalid record value")
	// ErrVersion reports an unsupported base version (RFC 8428 §4.4).
	ErrVersion = errors.New("senml: unsupported version")
	// ErrMustUnderstand reports a field whose label ends in "_"
	// (RFC 8428 §4.4), which this decoder does not understand.
	ErrMustUnderstand = errors.New("senml: unknown must-understand field")
	// ErrNoSeq reports a telemetry pack without a "seq" record.
	ErrNoSeq = errors.New("senml: telemetry without seq record")
	// ErrFormat reports an unknown representation.
	ErrFormat = errors.New("senml: unknown format")
)
