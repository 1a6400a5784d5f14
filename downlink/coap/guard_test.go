package coap_test

import (
	"net"
	"testing"

	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// TestGarbageCounted: datagrams failing the record check are counted by
// reason before pion sees them, from strangers and from a peer with a live
// session alike, and the session is not disturbed.
func TestGarbageCounted(t *testing.T) {
	f := newFixture(t, nil)
	d, err := coaptest.Dial(t, f.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d, "/before"); code != codes.Content {
		t.Fatalf("before: %v", code)
	}
	stranger, err := net.Dial("udp", f.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	srvAddr := f.srv.Addr()
	cases := []struct {
		b    []byte
		want coap.GarbageReason
	}{
		{[]byte{0x16, 0xfe}, coap.GarbageShort},
		{[]byte{0x63, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, coap.GarbageContentType},
		{[]byte{0x16, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, coap.GarbageVersion}, // TLS, not DTLS
		{[]byte{0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 9, 1, 2}, coap.GarbageLength},
		{[]byte{0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 1, 2, 0xff}, coap.GarbageShort}, // trailing byte
	}
	want := map[coap.GarbageReason]uint64{}
	for _, c := range cases {
		if got := coap.ClassifyDatagram(c.b, 8); got != c.want {
			t.Fatalf("ClassifyDatagram(% x) = %v, want %v", c.b, got, c.want)
		}
		// Once from a stranger, once from the device's own address (the
		// session's route).
		if _, err := stranger.Write(c.b); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Sock.WriteTo(c.b, srvAddr); err != nil {
			t.Fatal(err)
		}
		want[c.want] += 2
	}
	// Well-formed but not a handshake, from a peer with no session.
	if _, err := stranger.Write([]byte{0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 1, 2}); err != nil {
		t.Fatal(err)
	}
	want[coap.GarbageNoSession]++
	// The session still works, and the next request orders it after the
	// garbage, which the guard handles on its single read loop.
	if code, _ := get(t, d, "/after"); code != codes.Content {
		t.Fatalf("after garbage: %v", code)
	}
	total := uint64(0)
	for r, n := range want {
		total += n
		if got := f.srv.Stats.GarbageByReason[r].Load(); got != n {
			t.Errorf("GarbageByReason[%v] = %d, want %d", r, got, n)
		}
	}
	if got := f.srv.Stats.Garbage.Load(); got != total {
		t.Errorf("Garbage = %d, want %d", got, total)
	}
	if got := f.srv.Stats.HandshakesOK.Load(); got != 1 {
		t.Errorf("HandshakesOK = %d, want 1 (session kept)", got)
	}
}

// FuzzClassifyDatagram: never panics, and whatever it accepts pion's own
// record-layer parser splits into records with valid headers.
func FuzzClassifyDatagram(f *testing.F) {
	seeds := [][]byte{
		{},
		{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{0x16, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1},
		{0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 1, 2, 0x15, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 2, 0, 2, 1, 0},
		{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 9},
		{0x63, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if coap.ClassifyDatagram(b, 8) != coap.GarbageOK {
			return
		}
		pkts, err := recordlayer.ContentAwareUnpackDatagram(b, 8)
		if err != nil || len(pkts) == 0 {
			t.Fatalf("accepted % x, pion: %v", b, err)
		}
		n := 0
		for _, p := range pkts {
			h := &recordlayer.Header{ConnectionID: make([]byte, 8)}
			if p[0] != 25 {
				h.ConnectionID = nil
			}
			if err := h.Unmarshal(p); err != nil {
				t.Fatalf("accepted % x, pion header: %v", b, err)
			}
			n += len(p)
		}
		if n != len(b) {
			t.Fatalf("accepted % x, pion records cover %d of %d bytes", b, n, len(b))
		}
	})
}
