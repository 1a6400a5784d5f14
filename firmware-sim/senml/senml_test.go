package senml

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
	"time"
)

// RFC 8428 §5.1.2 (multiple data points, JSON).
const rfcJSON = `[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]`

func TestDecodeRFCExample(t *testing.T) {
	p, err := Decode([]byte(rfcJSON), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("got %d records, want 2", len(rs))
	}
	if got, want := rs[1].Name, "urn:dev:ow:10e2073a01080063:current"; got != want {
		t.Errorf("resolved name: got %q, want %q", got, want)
	}
	if got := *rs[0].Value; got != 120.1 {
		t.Errorf("voltage: got %v, want 120.1", got)
	}
}

func TestTelemetryRoundTrip(t *testing.T) {
	in := Telemetry{
		Device: "sensor-17",
		Seq:    42,
		Time:   time.UnixMilli(1_763_900_000_250).UTC(),
		Values: []Measurement{{"temp", "Cel", 21.5}, {"humidity", "%RH", 40.25}},
	}
	for _, f := range []Format{FormatJSON, FormatCBOR} {
		t.Run(f.String(), func(t *testing.T) {
			b, err := in.Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeTelemetry(b, f)
			if err != nil {
				t.Fatalf("decode %x: %v", b, err)
			}
			if !reflect.DeepEqual(got, in) {
				t.Errorf("got %+v, want %+v", got, in)
			}
		})
	}
}

func TestCBORUsesIntegerLabels(t *testing.T) {
	one := 1.0
	b, err := Encode(Pack{{Name: "a", Value: &one}}, FormatCBOR)
	if err != nil {
		t.Fatal(err)
	}
	// [ {0: "a", 2: 1.0} ] with the shortest float (f16 0x3c00).
	if got, want := hex.EncodeToString(b), "81a200616102f93c00"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestDataValueJSONIsBase64URL(t *testing.T) {
	p := Pack{{Name: "blob", DataValue: []byte{0xfb, 0xff}}}
	b, err := Encode(p, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[{"n":"blob","vd":"-_8"}]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	back, err := Decode(b, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Errorf("got %+v, want %+v", back, p)
	}
}

func TestBaseValueAndTimeResolve(t *testing.T) {
	p, err := Decode([]byte(`[{"bn":"d/","bt":1700000000,"bv":10,"bu":"Cel","n":"a","v":1.5,"t":2},{"n":"b","v":-1}]`), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if *rs[0].Value != 11.5 || *rs[1].Value != 9 || rs[1].Unit != "Cel" || rs[0].Time != 1700000002 {
		t.Errorf("got %+v %+v", rs[0], rs[1])
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		f    Format
		want error
	}{
		{"not an array", `{"n":"a"}`, FormatJSON, ErrSyntax},
		{"empty", `[]`, FormatJSON, ErrEmpty},
		{"no name", `[{"v":1}]`, FormatJSON, ErrName},
		{"bad name char", `[{"n":"a b","v":1}]`, FormatJSON, ErrName},
		{"name starts with dash", `[{"n":"-a","v":1}]`, FormatJSON, ErrName},
		{"two values", `[{"n":"a","v":1,"vs":"x"}]`, FormatJSON, ErrValue},
		{"must understand", `[{"n":"a","v":1,"foo_":1}]`, FormatJSON, ErrMustUnderstand},
		{"version too new", `[{"bver":11,"n":"a","v":1}]`, FormatJSON, ErrVersion},
		{"bad vd", `[{"n":"a","vd":"***"}]`, FormatJSON, ErrValue},
		{"cbor garbage", "\xff\x00", FormatCBOR, ErrSyntax},
		{"cbor map not array", "\xa1\x00\x61\x61", FormatCBOR, ErrSyntax},
		{"cbor must understand", "\x81\xa2\x00\x61\x61\x64foo_\x01", FormatCBOR, ErrMustUnderstand},
		{"cbor empty", "\x80", FormatCBOR, ErrEmpty},
		{"unknown format", `[]`, Format(9), ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in), tt.f)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeTelemetryErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"no seq", `[{"bn":"d/","n":"temp","v":1}]`, ErrNoSeq},
		{"negative seq", `[{"bn":"d/","n":"seq","v":-1}]`, ErrValue},
		{"fractional seq", `[{"bn":"d/","n":"seq","v":1.5}]`, ErrValue},
		{"string seq", `[{"bn":"d/","n":"seq","vs":"1"}]`, ErrNoSeq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeTelemetry([]byte(tt.in), FormatJSON)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	big := make([]byte, MaxPackBytes+1)
	if _, err := Decode(big, FormatJSON); !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
}
