package senml

import (
	"reflect"
	"testing"
	"time"
)

func fuzzSeeds(f *testing.F, format Format) {
	f.Add([]byte(rfcJSON))
	tel := Telemetry{Device: "sensor-1", Seq: 7, Time: time.Unix(1763900000, 0), Values: []Measurement{{"temp", "Cel", 20.5}}}
	if b, err := tel.Encode(format); err == nil {
		f.Add(b)
	}
	f.Add([]byte("\x81\xa2\x00\x61\x61\x02\x01"))
	f.Add([]byte(`[{"bn":"d/","bt":1,"n":"seq","v":1},{"n":"x","vb":true}]`))
}

// roundTrip checks decode → encode → decode gives the same pack.
func roundTrip(t *testing.T, b []byte, f Format) {
	p, err := Decode(b, f)
	if err != nil {
		return
	}
	enc, err := Encode(p, f)
	if err != nil {
		t.Fatalf("re-encode of a valid pack failed: %v", err)
	}
	p2, err := Decode(enc, f)
	if err != nil {
		t.Fatalf("decode of re-encoded %q failed: %v", enc, err)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Fatalf("round trip changed the pack: %+v != %+v", p, p2)
	}
	_, _ = TelemetryFromPack(p)
}

func FuzzDecodeJSON(f *testing.F) {
	fuzzSeeds(f, FormatJSON)
	f.Fuzz(func(t *testing.T, b []byte) { roundTrip(t, b, FormatJSON) })
}

func FuzzDecodeCBOR(f *testing.F) {
	fuzzSeeds(f, FormatCBOR)
	f.Fuzz(func(t *testing.T, b []byte) { roundTrip(t, b, FormatCBOR) })
}
