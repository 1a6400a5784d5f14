package coap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

var fuzzStateKey = bytes.Repeat([]byte{7}, stateKeyLen)

func sampleSaved() []savedSession {
	return []savedSession{
		{raddr: "127.0.0.1:5000", cid: "abcdefgh", started: 1, lastSeen: 2, lastAct: 3, bytesIn: 4, bytesOut: 5, rebinds: 6,
			pskHash: sha256.Sum256([]byte("k")), state: []byte("pion state")},
		{raddr: "[2001:db8::1]:5683", state: nil},
	}
}

// FuzzDecodeSessions: the state file's plaintext parser never panics,
// refuses with ErrStateFile, respects the entry bound, and reads back what
// encodeSaved wrote.
func FuzzDecodeSessions(f *testing.F) {
	var pt []byte
	pt = append(pt, 0, 0, 0, 2)
	for _, e := range sampleSaved() {
		pt = encodeSaved(pt, &e)
	}
	f.Add(pt)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(pt[:len(pt)-3])
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeSessions(b, 4)
		if err != nil {
			if !errors.Is(err, ErrStateFile) {
				t.Fatalf("error not ErrStateFile: %v", err)
			}
			return
		}
		if len(es) > 4 {
			t.Fatalf("%d entries over the bound of 4", len(es))
		}
		re := []byte{byte(len(es) >> 24), byte(len(es) >> 16), byte(len(es) >> 8), byte(len(es))}
		for _, e := range es {
			if len(e.state) > maxStateEntry {
				t.Fatalf("state of %d bytes over the bound", len(e.state))
			}
			re = encodeSaved(re, &e)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, b)
		}
	})
}

// FuzzOpenSessions: the whole file (header, AEAD, plaintext) never panics
// and anything not sealed under the key is refused.
func FuzzOpenSessions(f *testing.F) {
	good, err := sealSessions(fuzzStateKey, sampleSaved())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("FGCS\x01"))
	f.Add([]byte("FGCS\x02" + string(make([]byte, 40))))
	f.Add(good[:len(good)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := openSessions(fuzzStateKey, b, 8)
		if err != nil {
			if !errors.Is(err, ErrStateFile) {
				t.Fatalf("error not ErrStateFile: %v", err)
			}
			return
		}
		if len(es) > 8 {
			t.Fatalf("%d entries over the bound", len(es))
		}
	})
}

func TestStateFileRoundTrip(t *testing.T) {
	in := sampleSaved()
	b, err := sealSessions(fuzzStateKey, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := openSessions(fuzzStateKey, b, 8)
	if err != nil || len(out) != 2 || out[0].raddr != in[0].raddr || out[0].cid != in[0].cid || out[0].pskHash != in[0].pskHash ||
		string(out[0].state) != "pion state" || out[1].raddr != in[1].raddr || out[0].rebinds != 6 {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	if _, err := openSessions(fuzzStateKey, b, 1); !errors.Is(err, ErrStateFile) {
		t.Fatalf("bound of 1: %v", err)
	}
	other := bytes.Repeat([]byte{8}, stateKeyLen)
	if _, err := openSessions(other, b, 8); !errors.Is(err, ErrStateFile) {
		t.Fatalf("other key: %v", err)
	}
}
