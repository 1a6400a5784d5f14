package senml

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Resolved is a record with all base fields applied (RFC 8428 §4.6).
type Resolved struct {
	Name        string
	Unit        string
	Value       *float64
	StringValue *string
	BoolValue   *bool
	DataValue   []byte
	Sum         *float64
	// Time is bt+t in seconds; values below 2**28 are relative to now
	// (RFC 8428 §4.5.3).
	Time       float64
	UpdateTime float64
}

// Resolve applies base name, time, unit, value and sum to each record
// (RFC 8428 §4.6) and validates the result. Byte slices alias p.
func (p Pack) Resolve() ([]Resolved, error) {
	var (
		bn, bu  string
		bt      float64
		bv, bs  *float64
		resolve = make([]Resolved, 0, len(p))
	)
	for i, r := range p {
		if r.BaseVersion != nil && (*r.BaseVersion < 1 || *r.BaseVersion > Version) {
			return nil, fmt.Errorf("%w: record %d: bver %d", ErrVersion, i, *r.BaseVersion)
		}
		if !finite(r.BaseValue, r.BaseSum, r.Value, r.Sum, &r.BaseTime, &r.Time, &r.UpdateTime) {
			return nil, fmt.Errorf("%w: record %d: not finite", ErrValue, i)
		}
		n := 0
		if r.Value != nil {
			n++
		}
		if r.StringValue != nil {
			n++
		}
		if r.BoolValue != nil {
			n++
		}
		if r.DataValue != nil {
			n++
		}
		if n > 1 {
			return nil, fmt.Errorf("%w: record %d: %d value fields", ErrValue, i, n)
		}
		if r.BaseName != "" {
			bn = r.BaseName
		}
		if r.BaseUnit != "" {
			bu = r.BaseUnit
		}
		if r.BaseTime != 0 {
			bt = r.BaseTime
		}
		if r.BaseValue != nil {
			bv = r.BaseValue
		}
		if r.BaseSum != nil {
			bs = r.BaseSum
		}
		out := Resolved{
			Name:        bn + r.Name,
			Unit:        r.Unit,
			StringValue: r.StringValue,
			BoolValue:   r.BoolValue,
			DataValue:   r.DataValue,
			Time:        bt + r.Time,
			UpdateTime:  r.UpdateTime,
		}
		if out.Unit == "" {
			out.Unit = bu
		}
		if r.Value != nil {
			v := *r.Value
			if bv != nil {
				v += *bv
			}
			out.Value = &v
		}
		if r.Sum != nil {
			s := *r.Sum
			if bs != nil {
				s += *bs
			}
			out.Sum = &s
		}
		if !validName(out.Name) {
			return nil, fmt.Errorf("%w: record %d: %q", ErrName, i, out.Name)
		}
		resolve = append(resolve, out)
	}
	return resolve, nil
}

// Measurement is one named reading in a telemetry pack.
type Measurement struct {
	// Name is relative to the device, e.g. "temp".
	Name string
	// Unit is a SenML unit (RFC 8428 §12.1), e.g. "Cel".
	Unit string
	// Value is the reading.
	Value float64
}

// Telemetry is what a simulated sensor sends each period: its name (the
// SenML base name without the trailing "/"), a per-device sequence number
// starting at 1, the sample time and the readings.
type Telemetry struct {
	Device string
	Seq    uint64
	Time   time.Time
	Values []Measurement
}

// maxExactSeq is the largest integer a float64 holds exactly.
const maxExactSeq = 1 << 53

// Pack returns the SenML form: first record {bn: "<device>/", bt, bver when
// needed, n: "seq", v: seq}, then one record per measurement.
func (t Telemetry) Pack() Pack {
	seq := float64(t.Seq)
	p := make(Pack, 0, 1+len(t.Values))
	p = append(p, Record{
		BaseName: t.Device + "/",
		BaseTime: float64(t.Time.UnixMilli()) / 1000,
		Name:     SeqName,
		Value:    &seq,
	})
	for _, m := range t.Values {
		v := m.Value
		p = append(p, Record{Name: m.Name, Unit: m.Unit, Value: &v})
	}
	return p
}

// Encode returns t as a SenML pack in format f.
func (t Telemetry) Encode(f Format) ([]byte, error) {
	if t.Seq > maxExactSeq {
		return nil, fmt.Errorf("%w: seq %d", ErrValue, t.Seq)
	}
	return Encode(t.Pack(), f)
}

// DecodeTelemetry parses a telemetry pack: the device is the resolved name
// of the record named "<device>/seq", which must carry a non-negative
// integer value; every other numeric record whose name starts with
// "<device>/" becomes a Measurement.
func DecodeTelemetry(b []byte, f Format) (Telemetry, error) {
	p, err := Decode(b, f)
	if err != nil {
		return Telemetry{}, err
	}
	return TelemetryFromPack(p)
}

// TelemetryFromPack extracts Telemetry from a validated pack.
func TelemetryFromPack(p Pack) (Telemetry, error) {
	rs, err := p.Resolve()
	if err != nil {
		return Telemetry{}, err
	}
	var t Telemetry
	found := false
	for _, r := range rs {
		dev, ok := strings.CutSuffix(r.Name, "/"+SeqName)
		if !ok || r.Value == nil || dev == "" {
			continue
		}
		v := *r.Value
		if v < 0 || v > maxExactSeq || v != math.Trunc(v) {
			return Telemetry{}, fmt.Errorf("%w: seq %v", ErrValue, v)
		}
		t.Device, t.Seq, found = dev, uint64(v), true
		if r.Time >= relativeTimeLimit {
			sec, frac := math.Modf(r.Time)
			t.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
		}
		break
	}
	if !found {
		return Telemetry{}, ErrNoSeq
	}
	prefix := t.Device + "/"
	for _, r := range rs {
		name, ok := strings.CutPrefix(r.Name, prefix)
		if !ok || name == SeqName || r.Value == nil {
			continue
		}
		t.Values = append(t.Values, Measurement{Name: name, Unit: r.Unit, Value: *r.Value})
	}
	return t, nil
}
