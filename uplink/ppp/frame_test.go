package ppp

import (
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		proto uint16
		info  string
		err   error
	}{
		{"LCP with FF03", "ff03 c021 0101 0004", ProtoLCP, "01010004", nil},
		{"ACFC (no FF03)", "c021 0901 0008", ProtoLCP, "09010008", nil},
		{"PFC IPv4", "21 4500", ProtoIPv4, "4500", nil},
		{"FF03 + PFC", "ff03 21 45", ProtoIPv4, "45", nil},
		{"IPCP", "ff03 8021 01", ProtoIPCP, "01", nil},
		{"even protocol", "ff03 c020 00", 0, "", ErrBadPacket},
		{"only address", "ff03", 0, "", ErrShort},
		{"truncated protocol", "ff03 c0", 0, "", ErrShort},
		{"empty", "", 0, "", ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proto, info, err := ParseFrame(h(t, tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err: got %v, want %v", err, tt.err)
			}
			if err == nil && (proto != tt.proto || hex.EncodeToString(info) != tt.info) {
				t.Fatalf("got %#x %x, want %#x %s", proto, info, tt.proto, tt.info)
			}
		})
	}
}

func TestParsePacket(t *testing.T) {
	p, err := ParsePacket(h(t, "0905 000a 1122 3344 5566 ffff"))
	if err != nil || p.Code != CodeEchoReq || p.ID != 5 || hex.EncodeToString(p.Data) != "112233445566" {
		t.Fatalf("got %+v %v (padding after Length must be ignored)", p, err)
	}
	for _, bad := range []string{"0905 00", "0905 0003", "0905 00ff 00"} {
		if _, err := ParsePacket(h(t, bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if got := hex.EncodeToString(AppendPacket(nil, ProtoLCP, Packet{Code: CodeTermReq, ID: 7})); got != "ff03c02105070004" {
		t.Errorf("append: got %s", got)
	}
}

// Our Configure-Requests, byte for byte.
func TestRequestVectors(t *testing.T) {
	now := time.Time{}
	srv := Config{Role: Server, Rand: zeroReader{}, LocalAddr: addr("10.10.0.1")}
	srv.setDefaults()
	m := newMachine(&srv, func([]byte) {}, now)
	// MRU 1400, Auth MS-CHAPv2, Magic 1 (zero random is bumped to 1).
	if got := hex.EncodeToString(m.lcpH.reqOptions()); got != "010405780305c223810506"+"00000001" {
		t.Errorf("server LCP: got %s", got)
	}
	if got := hex.EncodeToString(m.ipcpH.reqOptions()); got != "03060a0a0001" {
		t.Errorf("server IPCP: got %s", got)
	}
	cli := Config{Role: Client, Rand: zeroReader{}}
	cli.setDefaults()
	m = newMachine(&cli, func([]byte) {}, now)
	if got := hex.EncodeToString(m.ipcpH.reqOptions()); got != "030600000000"+"810600000000"+"830600000000" {
		t.Errorf("client IPCP: got %s", got)
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
