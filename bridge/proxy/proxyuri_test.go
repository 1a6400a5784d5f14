package proxy

import (
	"errors"
	"net/netip"
	"testing"
)

var testHosts = map[string]netip.Addr{"tsdb": netip.MustParseAddr("10.20.0.5")}

func TestParseProxyURI(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr error
	}{
		{"coap://10.20.0.1/sensors/t?x=1", Target{Host: "10.20.0.1", Addr: netip.MustParseAddrPort("10.20.0.1:5683"), Path: "/sensors/t", Query: "x=1"}, nil},
		{"COAP://TSDB:6000", Target{Host: "tsdb", Addr: netip.MustParseAddrPort("10.20.0.5:6000"), Path: "/"}, nil},
		{"coaps://10.20.0.1/", Target{}, ErrBadProxyURI},
		{"http://10.20.0.1/", Target{}, ErrBadProxyURI},
		{"coap://unknown/", Target{}, ErrUnknownHost},
		{"coap://[fd00::1]/", Target{}, ErrBadProxyURI},
		{"coap://10.20.0.1:0/", Target{}, ErrBadProxyURI},
		{"coap://10.20.0.1:70000/", Target{}, ErrBadProxyURI},
		{"coap://u@10.20.0.1/", Target{}, ErrBadProxyURI},
		{"coap:///x", Target{}, ErrBadProxyURI},
	}
	for _, tt := range tests {
		got, err := ParseProxyURI(tt.in, testHosts)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseProxyURI(%q): got err %v, want %v", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseProxyURI(%q): got %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseProxyURI: never panics; accepted targets are IPv4 with a
// non-zero port and an absolute path.
func FuzzParseProxyURI(f *testing.F) {
	for _, s := range []string{"coap://10.20.0.1/a/b?c=d", "coap://tsdb:5683", "coap://", "coap://1.2.3.4:65535/", "coap://[::1]/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseProxyURI(s, testHosts)
		if err != nil {
			return
		}
		if !tg.Addr.Addr().Is4() || tg.Addr.Port() == 0 || len(tg.Path) == 0 || tg.Path[0] != '/' {
			t.Fatalf("accepted bad target %+v from %q", tg, s)
		}
	})
}
