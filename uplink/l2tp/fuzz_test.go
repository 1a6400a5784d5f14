package l2tp

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func FuzzParseControl(f *testing.F) {
	f.Add(unhex(f, sccrqHex))
	f.Add(unhex(f, "c802 000c 0001 0000 0002 0003"))
	f.Add(unhex(f, "c802 001e 0001 0000 0000 0000 8008 0000 0000 0006 000a 0123 0001 dead beef"))
	f.Add(unhex(f, "c802 001c 0001 0000 0000 0000 8008 0000 0000 000a c008 0000 000e 1234"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, m, err := ParseControl(b, []byte("secret"))
		if err != nil {
			return
		}
		for _, a := range m.AVPs {
			if a.Hidden {
				return // re-hiding uses fresh randomness
			}
		}
		out, err := AppendControl(nil, h, &m, nil, nil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		want := append([]byte(nil), b[:h.Length]...)
		want[0] &^= 0x34 // reserved header bits are ignored on receipt and sent as zero (§3.1)
		want[1] &^= 0xf0
		if !bytes.Equal(out, want) {
			t.Fatalf("round trip:\n got %x\nwant %x", out, want)
		}
		_, m2, err := ParseControl(out, nil)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func FuzzDataPayload(f *testing.F) {
	f.Add(unhex(f, "0002 0007 0009 ff03 c021"))
	f.Add(unhex(f, "4002 000a 0007 0009 ff03"))
	f.Add(unhex(f, "0a02 0007 0009 0001 0000 0002 0000 ff03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := DataPayload(b)
		if err != nil {
			return
		}
		if h.PayloadOffset+len(p) > len(b) {
			t.Fatalf("payload beyond input")
		}
	})
}

// FuzzCoreInput feeds arbitrary datagrams to an established LNS tunnel
// core with one session: no panic, and the core stays consistent.
func FuzzCoreInput(f *testing.F) {
	f.Add(unhex(f, sccrqHex))
	f.Add(unhex(f, "c802 000c 0001 0000 0002 0003"))
	f.Add(unhex(f, "c802 0014 00c8 0000 0001 0001 8008 0000 0000 0006"))
	f.Add(unhex(f, "c802 001c 00c8 0000 0001 0001 8008 0000 0000 000e 8008 0000 0001 0001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := newPair(t, nil)
		p.establish()
		p.lac.OpenSession(p.now)
		p.flush()
		p.lns.Input(p.now, b)
		p.lns.Tick(p.now.Add(time.Second))
		if p.lns.state == tsEstablished && len(p.lns.sessions) > DefaultMaxSessions {
			t.Fatalf("sessions: %d", len(p.lns.sessions))
		}
	})
}
