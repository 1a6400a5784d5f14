package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// mm1 builds a Main Mode first message like strongSwan's: SA with two
// transforms and the NAT-T and DPD vendor IDs.
func mm1() []byte {
	sa := SAPayload{DOI: DOIIPsec, Situation: SituationIdentOnly, Proposals: []Proposal{{
		Num: 1, Protocol: ProtoISAKMP, Transforms: []Transform{
			phase1Transform(1, MustProposals("aes256-sha256-modp2048")[0], AuthPSK, 3*time.Hour),
			phase1Transform(2, MustProposals("aes128-sha1-ecp256")[0], AuthPSK, 100000*time.Second),
		}}}}
	h := Header{ICookie: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Exchange: ExchangeIdentityProtection}
	return AppendMessage(nil, h, []Payload{
		{PayloadSA, sa.Append(nil)}, {PayloadVendorID, VIDRFC3947}, {PayloadVendorID, VIDNATTDraft02}, {PayloadVendorID, VIDDPD},
	})
}

func TestMessageRoundTrip(t *testing.T) {
	b := mm1()
	m, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(m.Payloads), 4; got != want {
		t.Fatalf("payloads: got %d, want %d", got, want)
	}
	sa, err := ParseSA(m.Payloads[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(sa.Proposals[0].Transforms); got != 2 {
		t.Fatalf("transforms: got %d, want 2", got)
	}
	p, auth, life, ok := decodePhase1(sa.Proposals[0].Transforms[1])
	if !ok || p.String() != "aes128-sha1-ecp256" || auth != AuthPSK || life != 100000*time.Second {
		t.Errorf("transform 2: got %v %v %v %v", p, auth, life, ok)
	}
	if again := AppendMessage(nil, m.Header, m.Payloads); !bytes.Equal(again, b) {
		t.Errorf("re-encoding differs:\n got %x\nwant %x", again, b)
	}
	if again := sa.Append(nil); !bytes.Equal(again, m.Payloads[0].Body) {
		t.Errorf("SA re-encoding differs")
	}
}

func TestPayloadCodecs(t *testing.T) {
	id := AddrID(netip.MustParseAddr("192.0.2.10"), 17, 1701)
	gotID, err := ParseID(id.Append(nil))
	if err != nil || !reflect.DeepEqual(gotID, id) {
		t.Errorf("ID: got %+v, %v; want %+v", gotID, err, id)
	}
	sub := Identification{Type: IDIPv4AddrSubnet, Data: []byte{0, 0, 0, 0, 0, 0, 0, 0}}
	if pfx, ok := sub.Prefix(); !ok || pfx != netip.MustParsePrefix("0.0.0.0/0") {
		t.Errorf("subnet ID prefix: got %v %v", pfx, ok)
	}
	n := Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyRUThere, SPI: bytes.Repeat([]byte{7}, 16), Data: []byte{0, 0, 0, 9}}
	if got, err := ParseNotify(n.Append(nil)); err != nil || !reflect.DeepEqual(got, n) {
		t.Errorf("notify: got %+v, %v", got, err)
	}
	d := Delete{DOI: DOIIPsec, Protocol: ProtoESP, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}}
	if got, err := ParseDelete(d.Append(nil)); err != nil || !reflect.DeepEqual(got, d) {
		t.Errorf("delete: got %+v, %v", got, err)
	}
	a := netip.MustParseAddr("10.0.0.5")
	if got, err := ParseNATOA(AppendNATOA(nil, a)); err != nil || got != a {
		t.Errorf("NAT-OA: got %v, %v", got, err)
	}
	c := CertPayload{Encoding: certEncodingX509Sig, Data: []byte{0x30, 0}}
	if got, err := ParseCert(c.Append(nil)); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("cert: got %+v, %v", got, err)
	}
}

func TestMalformed(t *testing.T) {
	good := mm1()
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short header", good[:27], ErrShort},
		{"length beyond datagram", good[:len(good)-1], ErrBadLength},
		{"length below header", func() []byte { b := bytes.Clone(good); b[27] = 10; b[26] = 0; b[25] = 0; return b }(), ErrBadLength},
		{"version 2", func() []byte { b := bytes.Clone(good); b[17] = 0x20; return b }(), ErrBadVersion},
		{"payload length zero", func() []byte { b := bytes.Clone(good); b[30], b[31] = 0, 0; return b }(), ErrBadLength},
		{"unknown payload", func() []byte { b := bytes.Clone(good); b[16] = 99; return b }(), ErrUnknownPayload},
		{"truncated chain", func() []byte {
			b := bytes.Clone(good[:40])
			b[24], b[25], b[26], b[27] = 0, 0, 0, 40
			return b
		}(), ErrBadLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMessage(tt.b)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			var pe *ParseError
			if err != nil && !errors.As(err, &pe) {
				t.Errorf("error %v is not a *ParseError", err)
			}
		})
	}
	for _, b := range [][]byte{{0, 0, 0, 1, 0, 0, 0, 1}, {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9}, {0, 0, 0, 1}} {
		if _, err := ParseSA(b); err == nil {
			t.Errorf("ParseSA(%x) accepted", b)
		}
	}
	for _, b := range [][]byte{{1, 0, 0}, {1, 17, 6, 165, 10, 0, 0}, {99, 0, 0, 0, 1}} {
		if _, err := ParseID(b); err == nil {
			t.Errorf("ParseID(%x) accepted", b)
		}
	}
	if _, err := ParseDelete([]byte{0, 0, 0, 1, 3, 4, 0, 2, 1, 2, 3, 4}); err == nil {
		t.Errorf("delete with missing SPI accepted")
	}
	if _, err := ParseNotify([]byte{0, 0, 0, 1, 3, 9, 0, 14}); err == nil {
		t.Errorf("notify with SPI beyond end accepted")
	}
}
