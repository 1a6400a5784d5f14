package coap

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

func testHello(t testing.TB, cookie []byte, seq uint16, suites ...uint16) []byte {
	t.Helper()
	if suites == nil {
		suites = []uint16{0xc0a8}
	}
	rec := recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_2, SequenceNumber: uint64(seq) + 7},
		Content: &handshake.Handshake{Header: handshake.Header{MessageSequence: seq}, Message: &handshake.MessageClientHello{
			Version:            protocol.Version1_2,
			Random:             handshake.Random{RandomBytes: [28]byte{1, 2, 3}},
			SessionID:          []byte{},
			Cookie:             cookie,
			CipherSuiteIDs:     suites,
			CompressionMethods: []*protocol.CompressionMethod{{ID: 0}},
			Extensions:         []extension.Extension{&extension.UseExtendedMasterSecret{Supported: true}},
		}},
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCookie: a cookie is valid for the hello parameters and address it
// was made for, under the current and the previous secret, and nothing
// else; the HelloVerifyRequest echoes the hello's sequence numbers.
func TestCookie(t *testing.T) {
	now := time.Unix(1000, 0)
	j := newCookieJar(time.Minute, func() time.Time { return now })
	from := netip.MustParseAddrPort("192.0.2.7:40000")
	ch0, err := ParseClientHello(testHello(t, nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	if j.valid(from, &ch0) {
		t.Fatal("hello without cookie valid")
	}
	c := j.make(from, &ch0)
	if len(c) != cookieLen {
		t.Fatalf("cookie length %d", len(c))
	}
	hvr, err := helloVerifyRequest(&ch0, c)
	if err != nil {
		t.Fatal(err)
	}
	var rl recordlayer.RecordLayer
	if err := rl.Unmarshal(hvr); err != nil {
		t.Fatal(err)
	}
	h, ok := rl.Content.(*handshake.Handshake)
	if !ok || rl.Header.SequenceNumber != 7 || h.Header.MessageSequence != 0 {
		t.Fatalf("HelloVerifyRequest record seq %d content %T", rl.Header.SequenceNumber, rl.Content)
	}
	if v, ok := h.Message.(*handshake.MessageHelloVerifyRequest); !ok || !bytes.Equal(v.Cookie, c) {
		t.Fatalf("HelloVerifyRequest %+v", h.Message)
	}

	ch1, err := ParseClientHello(testHello(t, c, 1))
	if err != nil {
		t.Fatal(err)
	}
	if ch1.MessageSeq != 1 || !bytes.Equal(ch1.Cookie, c) {
		t.Fatalf("parsed seq %d cookie %x", ch1.MessageSeq, ch1.Cookie)
	}
	if !j.valid(from, &ch1) {
		t.Fatal("cookie not valid for its own hello")
	}
	if j.valid(netip.MustParseAddrPort("192.0.2.8:40000"), &ch1) {
		t.Fatal("cookie valid from another address")
	}
	if j.valid(netip.MustParseAddrPort("192.0.2.7:40001"), &ch1) {
		t.Fatal("cookie valid from another port")
	}
	other, err := ParseClientHello(testHello(t, c, 1, 0xc0a8, 0x00a8))
	if err != nil {
		t.Fatal(err)
	}
	if j.valid(from, &other) {
		t.Fatal("cookie valid for other cipher suites")
	}
	now = now.Add(90 * time.Second) // one rotation: previous secret still accepted
	if !j.valid(from, &ch1) {
		t.Fatal("cookie invalid after one rotation")
	}
	now = now.Add(60 * time.Second) // two rotations: void
	if j.valid(from, &ch1) {
		t.Fatal("cookie valid after two rotations")
	}
	now = now.Add(10 * time.Minute) // long quiet: both secrets replaced
	if j.valid(from, &ch1) {
		t.Fatal("cookie valid after a long pause")
	}
}

func TestParseClientHelloRejects(t *testing.T) {
	good := testHello(t, nil, 0)
	frag := append([]byte(nil), good...)
	frag[13+11]-- // fragment_length short of length
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":        {nil, ErrNotClientHello},
		"alert":        {append([]byte{21}, good[1:]...), ErrNotClientHello},
		"epoch 1":      {append(append([]byte{}, good[:4]...), append([]byte{1}, good[5:]...)...), ErrNotClientHello},
		"fragmented":   {frag, ErrFragmentedHello},
		"truncated":    {good[:len(good)-20], ErrMalformedHello},
		"server hello": {append(append(append([]byte{}, good[:13]...), 2), good[14:]...), ErrNotClientHello},
	}
	for name, c := range cases {
		if _, err := ParseClientHello(c.b); err != c.want {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}

// FuzzParseClientHello: never panics; what it accepts, pion's ClientHello
// parser reads with the same random and cookie (when pion accepts it too),
// and a cookie made for it validates.
func FuzzParseClientHello(f *testing.F) {
	f.Add(testHello(f, nil, 0))
	f.Add(testHello(f, bytes.Repeat([]byte{9}, cookieLen), 1, 0xc0a8, 0x00a8, 0xc0ae))
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	j := newCookieJar(time.Minute, time.Now)
	from := netip.MustParseAddrPort("198.51.100.1:5684")
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := ParseClientHello(b)
		if err != nil {
			return
		}
		if len(ch.Random) != handshake.RandomLength {
			t.Fatalf("random length %d", len(ch.Random))
		}
		n := int(b[11])<<8 | int(b[12])
		var m handshake.MessageClientHello
		if m.Unmarshal(b[recordlayer.FixedHeaderSize+handshake.HeaderLength:recordlayer.FixedHeaderSize+n]) == nil {
			r := m.Random.MarshalFixed()
			if !bytes.Equal(r[:], ch.Random) || !bytes.Equal(m.Cookie, ch.Cookie) {
				t.Fatalf("pion reads random %x cookie %x, we read %x %x", r, m.Cookie, ch.Random, ch.Cookie)
			}
		}
		ch.Cookie = j.make(from, &ch)
		if !j.valid(from, &ch) {
			t.Fatal("cookie made for the hello does not validate")
		}
		if _, err := helloVerifyRequest(&ch, ch.Cookie); err != nil {
			t.Fatal(err)
		}
	})
}
