package dhcpinform

import (
	"bytes"
	"net/netip"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(windowsInform(f, nil))
	f.Add(windowsInform(f, func(m []byte) []byte { return append(m[:len(m)-1], 0, 0, 0) }))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := Parse(b)
		if err != nil {
			return
		}
		out, err := AppendAck(nil, in, Reply{ServerID: netip.MustParseAddr("10.10.0.1"),
			Routes: []Route{{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParseAddr("10.10.0.1")}}})
		if err != nil {
			t.Fatalf("AppendAck on a parsed inform: %v", err)
		}
		if _, err := Parse(out); err == nil {
			t.Fatal("our ACK parsed as an INFORM")
		}
	})
}

func FuzzParseClasslessRoutes(f *testing.F) {
	f.Add([]byte{0, 10, 10, 0, 1})
	f.Add([]byte{24, 10, 27, 129, 10, 10, 0, 1, 25, 10, 229, 0, 128, 10, 10, 0, 1})
	f.Add([]byte{32, 10, 198, 122, 47, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		routes, err := ParseClasslessRoutes(b)
		if err != nil {
			return
		}
		if got := AppendClasslessRoutes(nil, routes); !bytes.Equal(got, b) {
			t.Fatalf("round trip: got % x, want % x", got, b)
		}
	})
}
