package ike

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParseMessage feeds arbitrary datagrams to the codec: it must never
// panic, and every unencrypted message it accepts must re-encode to the
// same bytes (up to the header's length) and its payload parsers must not
// panic either.
func FuzzParseMessage(f *testing.F) {
	f.Add(mm1())
	f.Add(AppendMessage(nil, Header{Exchange: ExchangeInformational}, []Payload{{PayloadNotify, Notification{DOI: DOIIPsec, Protocol: ProtoISAKMP, Type: NotifyNoProposalChosen}.Append(nil)}}))
	f.Add(AppendMessage(nil, Header{Exchange: ExchangeIdentityProtection}, []Payload{{PayloadKE, bytes.Repeat([]byte{1}, 64)}, {PayloadNonce, make([]byte, 32)}, {PayloadNATD, make([]byte, 32)}, {PayloadNATD, make([]byte, 32)}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if m.Encrypted != nil {
			return
		}
		for _, p := range m.Payloads {
			switch p.Type {
			case PayloadSA:
				if sa, err := ParseSA(p.Body); err == nil && canonicalAttrs(sa) {
					// Reserved bytes are ignored on parse, so compare
					// parse(append(sa)) with sa rather than bytes.
					again, err := ParseSA(sa.Append(nil))
					if err != nil || !reflect.DeepEqual(again, sa) {
						t.Errorf("SA round trip: %v\n got %+v\nwant %+v", err, again, sa)
					}
				}
			case PayloadID:
				if id, err := ParseID(p.Body); err == nil {
					_ = id.String() // log rendering of peer IDs (DN parsed with encoding/asn1)
				}
			case PayloadNotify:
				_, _ = ParseNotify(p.Body)
			case PayloadDelete:
				_, _ = ParseDelete(p.Body)
			case PayloadNATOA, PayloadNATOADraft:
				_, _ = ParseNATOA(p.Body)
			case PayloadCert, PayloadCertReq:
				_, _ = ParseCert(p.Body)
			}
		}
		again := AppendMessage(nil, m.Header, m.Payloads)
		// Re-encoding drops trailing padding and normalises reserved bits.
		want := bytes.Clone(b[:len(again)])
		want[17] = Version
		if !bytes.Equal(again[:HeaderLen-4], want[:HeaderLen-4]) || !bytes.Equal(again[HeaderLen:], want[HeaderLen:]) {
			t.Errorf("message re-encoding differs:\n got %x\nwant %x", again, want)
		}
	})
}

// canonicalAttrs reports whether every variable attribute carries its data
// (so re-encoding is byte-identical).
func canonicalAttrs(sa *SAPayload) bool {
	for _, p := range sa.Proposals {
		for _, t := range p.Transforms {
			for _, a := range t.Attrs {
				if !a.Basic && a.Data == nil {
					return false
				}
			}
		}
	}
	return true
}
