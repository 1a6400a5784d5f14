package spool

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func mustRecord(t testing.TB, r Record) []byte {
	t.Helper()
	b, err := AppendRecord(nil, r)
	if err != nil {
		t.Fatalf("AppendRecord: %v", err)
	}
	return b
}

func samplePut(seq uint64) Record {
	return Record{Type: RecordPut, Msg: Message{
		Seq: seq, Endpoint: "sensor-17", Topic: "telemetry/temp", QoS: 1, Retain: true,
		Enqueued: time.Unix(1700000000, 123), Payload: []byte("21.5"),
	}}
}

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		r    Record
	}{
		{"put", samplePut(7)},
		{"put empty topic and payload", Record{Type: RecordPut, Msg: Message{Seq: 1, Endpoint: "e", Enqueued: time.Unix(0, 0)}}},
		{"ack delivered", Record{Type: RecordAck, Seq: 99, Reason: AckDelivered}},
		{"ack overflow", Record{Type: RecordAck, Seq: 1 << 40, Reason: AckDroppedOverflow}},
		{"bind publish", Record{Type: RecordBind, Seq: 5, PacketID: 1, Stage: 1}},
		{"bind pubrel", Record{Type: RecordBind, Seq: 5, PacketID: 65535, Stage: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustRecord(t, tt.r)
			if got, want := len(b), tt.r.encodedLen(); got != want {
				t.Fatalf("encoded len: got %d, want %d", got, want)
			}
			got, n, err := ParseRecord(b, 0)
			if err != nil {
				t.Fatalf("ParseRecord: %v", err)
			}
			if n != len(b) {
				t.Fatalf("consumed: got %d, want %d", n, len(b))
			}
			b2 := mustRecord(t, got)
			if !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", b2, b)
			}
		})
	}
}

func TestParseRecordErrors(t *testing.T) {
	good := mustRecord(t, samplePut(1))
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0x01; return b }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:recordHeaderLen], ErrShort},
		{"torn body", good[:len(good)-1], ErrShort},
		{"bad magic", flip(0), ErrMagic},
		{"flipped type", flip(1), ErrChecksum},
		{"flipped payload", flip(len(good) - 1), ErrChecksum},
		{"flipped crc", flip(7), ErrChecksum},
		{"huge length", append([]byte{recordMagic, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0}, good[10:]...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseRecord(tt.in, 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAppendRecordInvalid(t *testing.T) {
	long := string(make([]byte, maxEndpointLen+1))
	for _, r := range []Record{
		{Type: RecordPut, Msg: Message{Endpoint: ""}},
		{Type: RecordPut, Msg: Message{Endpoint: long}},
		{Type: RecordPut, Msg: Message{Endpoint: "e", QoS: 3}},
		{Type: 9},
	} {
		b, err := AppendRecord([]byte{1, 2}, r)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", r, err)
		}
		if len(b) != 2 {
			t.Errorf("%+v: buffer grew to %d on error", r, len(b))
		}
	}
}

func TestScanSegmentResync(t *testing.T) {
	var log []byte
	for i := uint64(1); i <= 5; i++ {
		log = append(log, mustRecord(t, samplePut(i))...)
	}
	recLen := len(log) / 5
	tests := []struct {
		name       string
		mutate     func(b []byte) []byte
		wantSeqs   []uint64
		wantTorn   bool
		wantCorrup int
	}{
		{"clean", func(b []byte) []byte { return b }, []uint64{1, 2, 3, 4, 5}, false, 0},
		{"torn tail", func(b []byte) []byte { return b[:len(b)-3] }, []uint64{1, 2, 3, 4}, true, 0},
		{"flip in record 2", func(b []byte) []byte { b[recLen+20] ^= 0x80; return b }, []uint64{1, 3, 4, 5}, false, 1},
		{"flip length of record 3", func(b []byte) []byte { b[2*recLen+5] ^= 0x40; return b }, []uint64{1, 2, 4, 5}, false, 1},
		{"garbage between", func(b []byte) []byte {
			out := append([]byte(nil), b[:recLen]...)
			out = append(out, 0xF5, 0xF5, 0, 1, 2)
			return append(out, b[recLen:]...)
		}, []uint64{1, 2, 3, 4, 5}, false, 1},
		{"zero-filled tail (power loss)", func(b []byte) []byte { return append(b, make([]byte, 64)...) }, []uint64{1, 2, 3, 4, 5}, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(log))
			var got []uint64
			res := ScanSegment(b, 0, func(_ int, r Record) { got = append(got, r.Seq) })
			if !equalSeqs(got, tt.wantSeqs) {
				t.Fatalf("seqs: got %v, want %v", got, tt.wantSeqs)
			}
			if res.TornTail != tt.wantTorn || res.Corrupt != tt.wantCorrup {
				t.Fatalf("result: got torn=%v corrupt=%d, want torn=%v corrupt=%d", res.TornTail, res.Corrupt, tt.wantTorn, tt.wantCorrup)
			}
		})
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
