// Package senml encodes and decodes Sensor Measurement Lists (SenML,
// RFC 8428) in their JSON and CBOR representations, and the small telemetry
// convention the simulated firmware uses on top of them (a per-device
// sequence number carried as the record named "seq").
//
// Codecs are pure functions: no I/O, no logging, no state.
package senml

// Content-Format numbers registered for SenML (RFC 8428 §12.3).
const (
	// ContentFormatJSON is application/senml+json.
	ContentFormatJSON uint16 = 110
	// ContentFormatCBOR is application/senml+cbor.
	ContentFormatCBOR uint16 = 112
)

// MIME media types (RFC 8428 §12.3).
const (
	// MediaTypeJSON is the media type of a SenML pack in JSON.
	MediaTypeJSON = "application/senml+json"
	// MediaTypeCBOR is the media type of a SenML pack in CBOR.
	MediaTypeCBOR = "application/senml+cbor"
)

// Limits applied before parsing; SenML itself sets none, these bound what
// a constrained collector accepts from one message.
const (
	// MaxPackBytes is the largest encoded pack accepted by the decoders.
	MaxPackBytes = 64 * 1024
	// MaxRecords is the largest number of records accepted in one pack.
	MaxRecords = 1024
	// MaxNameLen bounds a resolved record name.
	MaxNameLen = 256
)

// CBOR map labels (RFC 8428 §6, Table 4) are the keyasint struct tags on
// Record: bver -1, bn -2, bt -3, bu -4, bv -5, bs -6, n 0, u 1, v 2, vs 3,
// vb 4, s 5, t 6, ut 7, vd 8.

// Version is the SenML version this package writes (RFC 8428 §4.4: 10).
const Version = 10

// SeqName is the record name (relative to the device's base name) carrying
// the firmware's per-device telemetry sequence number.
const SeqName = "seq"

// relativeTimeLimit: times below 2**28 are relative to now (RFC 8428 §4.5.3).
const relativeTimeLimit = 1 << 28
