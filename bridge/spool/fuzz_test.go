package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParseRecord: ParseRecord never panics, and whatever it accepts
// re-encodes to the same bytes (round trip).
func FuzzParseRecord(f *testing.F) {
	f.Add(mustRecord(f, samplePut(1)))
	f.Add(mustRecord(f, Record{Type: RecordAck, Seq: 3, Reason: AckDroppedOverflow}))
	f.Add(mustRecord(f, Record{Type: RecordBind, Seq: 9, PacketID: 4, Stage: 2}))
	f.Add([]byte{recordMagic, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseRecord(b, 1<<16)
		if err != nil {
			return
		}
		out, err := AppendRecord(nil, r)
		if err != nil {
			t.Fatalf("accepted record does not re-encode: %v", err)
		}
		if !bytes.Equal(out, b[:n]) {
			t.Fatalf("round trip differs:\n got %x\nwant %x", out, b[:n])
		}
	})
}

// FuzzRecover builds a log from a script of appends and acks, damages it
// (cut at an offset, flip a bit) and reopens it. Recovery must never panic
// or fail; every recovered message must be one that was appended, in
// per-endpoint order; when the damage is only a cut (a torn write), every
// message whose Put lies wholly before the cut and whose Ack does not is
// recovered, and nothing else.
func FuzzRecover(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0x81, 0, 1}, uint16(40), uint16(0xffff), uint8(0))
	f.Add([]byte{2, 2, 2, 0x80, 0x80, 1, 1}, uint16(0xffff), uint16(25), uint8(3))
	f.Add([]byte{1, 0, 1, 0, 0x82, 0x83}, uint16(100), uint16(70), uint8(7))
	f.Fuzz(func(t *testing.T, script []byte, cut uint16, flipAt uint16, flipBit uint8) {
		if len(script) > 64 {
			script = script[:64]
		}
		var log []byte
		type put struct {
			seq      uint64
			ep       string
			end      int // offset just past its Put
			ackedEnd int // offset just past its Ack, 0 if none
		}
		var puts []*put
		var seq uint64
		for i, op := range script {
			if op&0x80 != 0 && len(puts) > 0 { // ack the oldest unacked
				for _, p := range puts {
					if p.ackedEnd == 0 {
						log, _ = AppendRecord(log, Record{Type: RecordAck, Seq: p.seq})
						p.ackedEnd = len(log)
						break
					}
				}
				continue
			}
			seq++
			ep := fmt.Sprintf("ep%d", op%3)
			log, _ = AppendRecord(log, Record{Type: RecordPut, Msg: Message{
				Seq: seq, Endpoint: ep, Topic: "t", QoS: op % 3, Enqueued: time.Unix(int64(i), 0), Payload: []byte{op, byte(i)},
			}})
			puts = append(puts, &put{seq: seq, ep: ep, end: len(log)})
		}
		c := int(cut)
		if c > len(log) {
			c = len(log)
		}
		data := bytes.Clone(log[:c])
		flipped := int(flipAt) < len(data)
		if flipped {
			data[flipAt] ^= 1 << (flipBit % 8)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{Dir: dir})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		appended := map[uint64]string{}
		for _, p := range puts {
			appended[p.seq] = p.ep
		}
		got := map[uint64]bool{}
		for _, ep := range []string{"ep0", "ep1", "ep2"} {
			var last uint64
			for _, m := range s.Pending(ep, 0, 1000) {
				if appended[m.Seq] != ep {
					t.Fatalf("recovered seq %d for %s was never appended there", m.Seq, ep)
				}
				if m.Seq <= last {
					t.Fatalf("%s out of order: %d after %d", ep, m.Seq, last)
				}
				last = m.Seq
				got[m.Seq] = true
			}
		}
		if flipped {
			return
		}
		for _, p := range puts {
			want := p.end <= c && (p.ackedEnd == 0 || p.ackedEnd > c)
			if got[p.seq] != want {
				t.Fatalf("seq %d: recovered=%v, want %v (cut %d, put end %d, ack end %d)", p.seq, got[p.seq], want, c, p.end, p.ackedEnd)
			}
		}
	})
}
