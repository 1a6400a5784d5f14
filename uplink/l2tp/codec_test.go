package l2tp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sccrqHex is an SCCRQ as xl2tpd 1.3 sends it (host name "xl2tpd",
// assigned tunnel 1, window 4), with the length filled in.
const sccrqHex = `c802 0054 0000 0000 0000 0000
	8008 0000 0000 0001
	8008 0000 0002 0100
	800a 0000 0003 0000 0003
	800a 0000 0004 0000 0000
	0008 0000 0006 0690
	800c 0000 0007 786c 3274 7064
	8008 0000 0009 0001
	8008 0000 000a 0004`

func TestParseControlSCCRQ(t *testing.T) {
	b := unhex(t, sccrqHex)
	h, m, err := ParseControl(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != MsgSCCRQ {
		t.Fatalf("type: got %v, want SCCRQ", m.Type)
	}
	if h.TunnelID != 0 || h.SessionID != 0 || h.Ns != 0 || h.Nr != 0 || int(h.Length) != len(b) {
		t.Fatalf("header: got %+v", h)
	}
	if v, _ := m.Uint16(AVPAssignedTunnelID); v != 1 {
		t.Errorf("assigned tunnel: got %d, want 1", v)
	}
	if v, _ := m.Uint32(AVPFramingCapabilities); v != 3 {
		t.Errorf("framing: got %d, want 3", v)
	}
	if a := m.Find(AVPHostName); a == nil || string(a.Value) != "xl2tpd" {
		t.Errorf("host name: got %v", a)
	}
	if a := m.Find(AVPFirmwareRevision); a == nil || a.Mandatory {
		t.Errorf("firmware revision: got %+v, want non-mandatory", a)
	}
	out, err := AppendControl(nil, h, &m, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("re-encode:\n got %x\nwant %x", out, b)
	}
}

func TestAppendControlEveryType(t *testing.T) {
	types := []MessageType{MsgSCCRQ, MsgSCCRP, MsgSCCCN, MsgStopCCN, MsgHELLO, MsgOCRQ, MsgOCRP, MsgOCCN,
		MsgICRQ, MsgICRP, MsgICCN, MsgCDN, MsgWEN, MsgSLI}
	for _, typ := range types {
		t.Run(typ.String(), func(t *testing.T) {
			m := Message{Type: typ}
			if typ == MsgStopCCN || typ == MsgCDN {
				m.Add(AVPResultCode, ResultCodeValue(2, 5, "bye"))
			}
			if typ.sessionScoped() {
				m.AddUint16(AVPAssignedSessionID, 77)
			}
			h := Header{TunnelID: 9, SessionID: 3, Ns: 5, Nr: 6}
			b, err := AppendControl(nil, h, &m, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, "c802") // T, L, S, version 2
			if !bytes.Equal(b[:2], want) {
				t.Fatalf("flags: got %x, want %x", b[:2], want)
			}
			gh, gm, err := ParseControl(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if gh.TunnelID != 9 || gh.SessionID != 3 || gh.Ns != 5 || gh.Nr != 6 {
				t.Errorf("header: got %+v", gh)
			}
			if gm.Type != typ || len(gm.AVPs) != len(m.AVPs) {
				t.Errorf("got %v with %d AVPs, want %v with %d", gm.Type, len(gm.AVPs), typ, len(m.AVPs))
			}
			if r, c, msg, ok := gm.ResultCode(); (typ == MsgStopCCN || typ == MsgCDN) && (!ok || r != 2 || c != 5 || msg != "bye") {
				t.Errorf("result code: got %d %d %q %v", r, c, msg, ok)
			}
		})
	}
}

// TestReservedHeaderBitsIgnored is the fuzz crasher 357f88788eee67fc: the
// x bits of the header are ignored on receipt (§3.1) and sent as zero.
func TestReservedHeaderBitsIgnored(t *testing.T) {
	b := unhex(t, "f8f2 000c 0001 0000 0002 0003")
	h, m, err := ParseControl(b, nil)
	if err != nil || m.Type != MsgZLB {
		t.Fatalf("got %v %v", m.Type, err)
	}
	out, _ := AppendControl(nil, h, &m, nil, nil)
	if want := unhex(t, "c802 000c 0001 0000 0002 0003"); !bytes.Equal(out, want) {
		t.Fatalf("got %x, want %x", out, want)
	}
}

// TestMessageTypeWithoutMBit is the fuzz crasher 7655a1fb5bf497c0: a
// Message Type AVP with the M bit clear is kept as such (§4.4.1: an unknown
// type is then ignored rather than fatal).
func TestMessageTypeWithoutMBit(t *testing.T) {
	b := unhex(t, "c802 0014 0001 0000 0000 0000 0008 0000 0000 00c8")
	h, m, err := ParseControl(b, nil)
	if err != nil || m.Type != 200 || !m.TypeOptional {
		t.Fatalf("got %v optional=%v %v", m.Type, m.TypeOptional, err)
	}
	out, _ := AppendControl(nil, h, &m, nil, nil)
	if !bytes.Equal(out, b) {
		t.Fatalf("got %x, want %x", out, b)
	}
}

func TestZLB(t *testing.T) {
	b, err := AppendControl(nil, Header{TunnelID: 1, Ns: 2, Nr: 3}, &Message{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "c802 000c 0001 0000 0002 0003")
	if !bytes.Equal(b, want) {
		t.Fatalf("got %x, want %x", b, want)
	}
	_, m, err := ParseControl(b, nil)
	if err != nil || m.Type != MsgZLB || len(m.AVPs) != 0 {
		t.Fatalf("got %v %v %v", m.Type, m.AVPs, err)
	}
}

func TestHiddenAVP(t *testing.T) {
	secret := []byte("tunnel secret")
	m := Message{Type: MsgICRQ}
	m.AddUint16(AVPAssignedSessionID, 42)
	m.AVPs = append(m.AVPs, AVP{Mandatory: true, Hidden: true, Type: AVPCallingNumber, Value: []byte("a long calling number spanning blocks")})
	b, err := AppendControl(nil, Header{TunnelID: 1}, &m, secret, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("calling number")) {
		t.Fatal("hidden value visible on the wire")
	}
	_, got, err := ParseControl(b, secret)
	if err != nil {
		t.Fatal(err)
	}
	a := got.Find(AVPCallingNumber)
	if a == nil || !a.Hidden || string(a.Value) != "a long calling number spanning blocks" {
		t.Fatalf("got %+v", a)
	}
	if got.Find(AVPRandomVector) == nil {
		t.Error("no Random Vector AVP emitted")
	}
	if _, _, err := ParseControl(b, []byte("wrong")); err == nil {
		// A wrong secret may still decode to a plausible length by chance;
		// the value must then differ.
		_, g2, _ := ParseControl(b, []byte("wrong"))
		if a2 := g2.Find(AVPCallingNumber); a2 != nil && bytes.Equal(a2.Value, a.Value) {
			t.Error("wrong secret recovered the value")
		}
	}
	if _, _, err := ParseControl(b, nil); !errors.Is(err, ErrHidden) {
		t.Errorf("no secret: got %v, want ErrHidden", err)
	}
}

func TestParseControlBad(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrShort},
		{"truncated header", "c802 000c 0001", ErrShort},
		{"version 3", "c803 000c 0001 0000 0000 0000", ErrBadVersion},
		{"control without L", "8802 0001 0000 0000 0000", ErrBadFlags},
		{"control with offset", "ca02 000e 0001 0000 0000 0000 0000", ErrBadFlags},
		{"length beyond buffer", "c802 00ff 0001 0000 0000 0000", ErrBadLength},
		{"length below header", "c802 0004 0001 0000 0000 0000", ErrBadLength},
		{"AVP length lies", "c802 0014 0001 0000 0000 0000 80ff 0000 0000 0001", ErrBadAVP},
		{"AVP length zero (loop)", "c802 0014 0001 0000 0000 0000 8000 0000 0000 0001", ErrBadAVP},
		{"AVP truncated", "c802 0010 0001 0000 0000 0000 8008 0000", ErrShort},
		{"first AVP not type", "c802 0014 0001 0000 0000 0000 8008 0000 0009 0001", ErrNoMessageType},
		{"reserved AVP bits", "c802 0014 0001 0000 0000 0000 8408 0000 0000 0001", ErrBadAVP},
		{"hidden without RV", "c802 001c 0001 0000 0000 0000 8008 0000 0000 000a c008 0000 000e 1234", ErrHidden},
		{"unknown mandatory", "c802 001c 0001 0000 0000 0000 8008 0000 0000 0006 8008 0000 00c8 0000", ErrUnknownMandatory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseControl(unhex(t, tt.in), []byte("s"))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestUnknownOptionalAVPIgnored(t *testing.T) {
	b := unhex(t, "c802 001e 0001 0000 0000 0000 8008 0000 0000 0006 000a 0123 0001 dead beef")
	_, m, err := ParseControl(b, nil)
	if err != nil || m.Type != MsgHELLO {
		t.Fatalf("got %v %v", m.Type, err)
	}
	if len(m.AVPs) != 1 || m.AVPs[0].Vendor != 0x123 {
		t.Fatalf("got %+v", m.AVPs)
	}
}

func TestDataPayload(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		tid, sid uint16
		payload  string
		wantErr  error
	}{
		{"minimal", "0002 0007 0009 ff03 c021", 7, 9, "ff03c021", nil},
		{"length", "4002 000a 0007 0009 ff03", 7, 9, "ff03", nil},
		{"length trims trailer", "4002 000a 0007 0009 ff03 eeee", 7, 9, "ff03", nil},
		{"seq", "0802 0007 0009 0001 0000 ff03", 7, 9, "ff03", nil},
		{"offset", "0202 0007 0009 0002 0000 ff03", 7, 9, "ff03", nil},
		{"offset lies", "0202 0007 0009 00ff 0000", 0, 0, "", ErrBadLength},
		{"control", "c802 000c 0001 0000 0000 0000", 0, 0, "", ErrBadFlags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, p, err := DataPayload(unhex(t, tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err: got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if h.TunnelID != tt.tid || h.SessionID != tt.sid || hex.EncodeToString(p) != tt.payload {
				t.Fatalf("got %d/%d %x, want %d/%d %s", h.TunnelID, h.SessionID, p, tt.tid, tt.sid, tt.payload)
			}
		})
	}
}

func TestPutDataHeader(t *testing.T) {
	var b [DataSeqHeaderLen]byte
	n := putDataHeader(b[:], 1, 2, false, 0)
	if got := hex.EncodeToString(b[:n]); got != "000200010002" {
		t.Errorf("plain: got %s", got)
	}
	n = putDataHeader(b[:], 1, 2, true, 5)
	if got := hex.EncodeToString(b[:n]); got != "08020001000200050000" {
		t.Errorf("seq: got %s", got)
	}
	h, _ := ParseHeader(b[:n])
	if !reflect.DeepEqual([]uint16{h.TunnelID, h.SessionID, h.Ns}, []uint16{1, 2, 5}) || !h.HasSeq {
		t.Errorf("parse back: %+v", h)
	}
}
