package senml

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Record is one SenML record (RFC 8428 §4). Optional numeric fields are
// pointers so that "absent" and "zero" differ, as the RFC requires for
// base value and value.
type Record struct {
	BaseVersion *int     `json:"bver,omitempty" cbor:"-1,keyasint,omitempty"`
	BaseName    string   `json:"bn,omitempty" cbor:"-2,keyasint,omitempty"`
	BaseTime    float64  `json:"bt,omitempty" cbor:"-3,keyasint,omitempty"`
	BaseUnit    string   `json:"bu,omitempty" cbor:"-4,keyasint,omitempty"`
	BaseValue   *float64 `json:"bv,omitempty" cbor:"-5,keyasint,omitempty"`
	BaseSum     *float64 `json:"bs,omitempty" cbor:"-6,keyasint,omitempty"`
	Name        string   `json:"n,omitempty" cbor:"0,keyasint,omitempty"`
	Unit        string   `json:"u,omitempty" cbor:"1,keyasint,omitempty"`
	Value       *float64 `json:"v,omitempty" cbor:"2,keyasint,omitempty"`
	StringValue *string  `json:"vs,omitempty" cbor:"3,keyasint,omitempty"`
	BoolValue   *bool    `json:"vb,omitempty" cbor:"4,keyasint,omitempty"`
	Sum         *float64 `json:"s,omitempty" cbor:"5,keyasint,omitempty"`
	Time        float64  `json:"t,omitempty" cbor:"6,keyasint,omitempty"`
	UpdateTime  float64  `json:"ut,omitempty" cbor:"7,keyasint,omitempty"`
	// DataValue is the "vd" field: base64url without padding in JSON
	// (RFC 8428 §4.3), a byte string in CBOR.
	DataValue []byte `json:"-" cbor:"8,keyasint,omitempty"`
}

// Pack is a SenML pack: an ordered list of records (RFC 8428 §4).
type Pack []Record

// jsonRecord carries vd as text for the JSON representation.
type jsonRecord struct {
	Record
	DataValue string `json:"vd,omitempty"`
}

// Format names a SenML representation.
type Format uint8

const (
	// FormatJSON is application/senml+json (RFC 8428 §5).
	FormatJSON Format = iota + 1
	// FormatCBOR is application/senml+cbor (RFC 8428 §6).
	FormatCBOR
)

// String returns "json" or "cbor".
func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatCBOR:
		return "cbor"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// ContentFormat returns the CoAP Content-Format number of f.
func (f Format) ContentFormat() uint16 {
	if f == FormatCBOR {
		return ContentFormatCBOR
	}
	return ContentFormatJSON
}

// ParseFormat maps "json"/"cbor" (and the empty string, meaning json) to a
// Format.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "", "json":
		return FormatJSON, nil
	case "cbor":
		return FormatCBOR, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrFormat, s)
}

// FormatFromContentFormat maps a CoAP Content-Format number to a Format.
func FormatFromContentFormat(cf uint16) (Format, error) {
	switch cf {
	case ContentFormatJSON:
		return FormatJSON, nil
	case ContentFormatCBOR:
		return FormatCBOR, nil
	}
	return 0, fmt.Errorf("%w: content-format %d", ErrFormat, cf)
}

var (
	cborEnc cbor.EncMode
	cborDec cbor.DecMode
)

func init() {
	var err error
	// Preferred serialization: shortest floats (RFC 8428 §6 allows any
	// float width; RFC 8949 §4.2.2 core deterministic encoding).
	cborEnc, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	cborDec, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  4,
		MaxArrayElements: MaxRecords,
		MaxMapPairs:      64,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode serialises p in format f. It validates p first.
func Encode(p Pack, f Format) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	switch f {
	case FormatJSON:
		js := make([]jsonRecord, len(p))
		for i, r := range p {
			js[i] = jsonRecord{Record: r}
			if r.DataValue != nil {
				js[i].DataValue = base64.RawURLEncoding.EncodeToString(r.DataValue)
			}
		}
		return json.Marshal(js)
	case FormatCBOR:
		return cborEnc.Marshal([]Record(p))
	}
	return nil, fmt.Errorf("%w: %d", ErrFormat, f)
}

// Decode parses a pack in format f: size and must-understand checks first,
// then the structural parse, then Validate. Decoded byte slices do not
// alias b.
func Decode(b []byte, f Format) (Pack, error) {
	if len(b) > MaxPackBytes {
		return nil, ErrTooLarge
	}
	var p Pack
	switch f {
	case FormatJSON:
		var keys []map[string]json.RawMessage
		if err := json.Unmarshal(b, &keys); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
		}
		if len(keys) > MaxRecords {
			return nil, ErrTooLarge
		}
		for _, m := range keys {
			for k := range m {
				if strings.HasSuffix(k, "_") {
					return nil, fmt.Errorf("%w: %q", ErrMustUnderstand, k)
				}
			}
		}
		var js []jsonRecord
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&js); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
		}
		p = make(Pack, len(js))
		for i, r := range js {
			p[i] = r.Record
			if r.DataValue != "" {
				d, err := base64.RawURLEncoding.DecodeString(r.DataValue)
				if err != nil {
					return nil, fmt.Errorf("%w: vd: %v", ErrValue, err)
				}
				p[i].DataValue = d
			}
		}
	case FormatCBOR:
		var keys []map[any]cbor.RawMessage
		if err := cborDec.Unmarshal(b, &keys); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
		}
		for _, m := range keys {
			for k := range m {
				if s, ok := k.(string); ok && strings.HasSuffix(s, "_") {
					return nil, fmt.Errorf("%w: %q", ErrMustUnderstand, s)
				}
			}
		}
		if err := cborDec.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
		}
	default:
		return nil, fmt.Errorf("%w: %d", ErrFormat, f)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate checks p against RFC 8428 §4: at least one record, at most one
// value field per record, finite numbers, supported version, and valid
// resolved names.
func (p Pack) Validate() error {
	if len(p) == 0 {
		return ErrEmpty
	}
	if len(p) > MaxRecords {
		return ErrTooLarge
	}
	_, err := p.Resolve()
	return err
}

func finite(fs ...*float64) bool {
	for _, f := range fs {
		if f != nil && (math.IsNaN(*f) || math.IsInf(*f, 0)) {
			return false
		}
	}
	return true
}

// validName reports whether s matches RFC 8428 §4.5.1: characters from
// A-Z a-z 0-9 - : . / _, starting with a letter or digit.
func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return false
		}
		if !alnum && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return false
		}
	}
	return true
}
