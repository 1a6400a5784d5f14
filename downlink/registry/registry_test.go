package registry

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sitePrefix = netip.MustParsePrefix("10.10.8.0/24")

func pskEP(name string) Endpoint {
	return Endpoint{Name: name, Protocol: CoAP, PSKIdentity: name, PSK: []byte("0123456789abcdef")}
}

func TestStableAddresses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.json")
	r, err := Open(path, sitePrefix, netip.MustParseAddr("10.10.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want string
	}{
		{"sensor-17", "10.10.8.17"},
		{"pump-17", "10.10.8.18"},   // .17 taken: next free
		{"gw-1", "10.10.8.2"},       // .1 reserved
		{"meter", "10.10.8.3"},      // no number: lowest free from .1
		{"x-255", "10.10.8.4"},      // broadcast: wraps to lowest free
		{"boiler-300", "10.10.8.5"}, // outside the prefix
		{"sensor-254", "10.10.8.254"},
	}
	for _, tt := range tests {
		e, err := r.Add(pskEP(tt.name))
		if err != nil {
			t.Fatalf("Add(%s): %v", tt.name, err)
		}
		if got := e.Addr.String(); got != tt.want {
			t.Fatalf("Add(%s): got %s, want %s", tt.name, got, tt.want)
		}
	}
	// Survives a restart.
	r2, err := Open(path, sitePrefix, netip.MustParseAddr("10.10.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		e, ok := r2.ByName(tt.name)
		if !ok || e.Addr.String() != tt.want {
			t.Fatalf("after reopen %s: got %v %v, want %s", tt.name, e.Addr, ok, tt.want)
		}
	}
	if e, ok := r2.ByAddr(netip.MustParseAddr("10.10.8.18")); !ok || e.Name != "pump-17" {
		t.Fatalf("ByAddr(.18): got %q %v, want pump-17", e.Name, ok)
	}
	if e, ok := r2.ByPSKIdentity("sensor-17"); !ok || string(e.PSK) != "0123456789abcdef" {
		t.Fatalf("ByPSKIdentity: got %v, want sensor-17's key", ok)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Fatalf("state file mode: got %o, want 600", got)
	}
	if err := r2.Remove("sensor-17"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.ByPSKIdentity("sensor-17"); ok {
		t.Fatal("removed endpoint still found by identity")
	}
	if err := r2.Remove("sensor-17"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: got %v, want ErrNotFound", err)
	}
}

func TestAddRejects(t *testing.T) {
	r, err := Open("", netip.MustParsePrefix("10.10.9.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(pskEP("a")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		e    Endpoint
		want error
	}{
		{"duplicate name", pskEP("a"), ErrExists},
		{"duplicate identity", Endpoint{Name: "b", Protocol: CoAP, PSKIdentity: "a", PSK: []byte("k")}, ErrExists},
		{"bad name", pskEP("a b"), ErrBadName},
		{"bad protocol", Endpoint{Name: "c", Protocol: "http", CertCN: "c"}, ErrBadProtocol},
		{"no credentials", Endpoint{Name: "c", Protocol: CoAP}, ErrNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.Add(tt.e); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := r.Add(pskEP("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(pskEP("c")); !errors.Is(err, ErrPrefixFull) {
		t.Fatalf("third endpoint in a /30: got %v, want ErrPrefixFull", err)
	}
}

func TestOpenRefusesOtherPrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	r, _ := Open(path, sitePrefix)
	if _, err := r.Add(pskEP("s-3")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, netip.MustParsePrefix("10.10.9.0/24")); !errors.Is(err, ErrBadState) {
		t.Fatalf("got %v, want ErrBadState", err)
	}
}

func TestParseStateRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"not json", "{"},
		{"version", `{"version":2,"prefix":"10.10.8.0/24","endpoints":[]}`},
		{"ipv6 prefix", `{"version":1,"prefix":"fd00::/64","endpoints":[]}`},
		{"outside prefix", `{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"a","protocol":"coap","cert_cn":"a","addr":"10.10.9.1"}]}`},
		{"network address", `{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"a","protocol":"coap","cert_cn":"a","addr":"10.10.8.0"}]}`},
		{"duplicate addr", `{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"a","protocol":"coap","cert_cn":"a","addr":"10.10.8.2"},{"name":"b","protocol":"coap","cert_cn":"b","addr":"10.10.8.2"}]}`},
		{"identity without key", `{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"a","protocol":"coap","psk_identity":"a","addr":"10.10.8.2"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseState([]byte(tt.in)); !errors.Is(err, ErrBadState) {
				t.Fatalf("got %v, want ErrBadState", err)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	e := Endpoint{Allow: []string{"10.20.0.0/16", "198.51.100.7:5683", "tsdb.example:8086"}}
	tests := []struct {
		host string
		dst  string
		want bool
	}{
		{"", "10.20.3.4:1", true},
		{"", "198.51.100.7:5683", true},
		{"", "198.51.100.7:5684", false},
		{"TSDB.example", "203.0.113.9:8086", true},
		{"tsdb.example", "203.0.113.9:8087", false},
		{"other", "203.0.113.9:8086", false},
	}
	for _, tt := range tests {
		if got := e.Allows(tt.host, netip.MustParseAddrPort(tt.dst)); got != tt.want {
			t.Errorf("Allows(%q, %s): got %v, want %v", tt.host, tt.dst, got, tt.want)
		}
	}
}

func TestProvisionCertAndSnippet(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "plant-a")
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateCA(dir, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Cert.Equal(ca.Cert) {
		t.Fatal("second LoadOrCreateCA made a new CA, want the stored one")
	}
	r, _ := Open("", sitePrefix)
	p, err := Provision(r, ca, Request{Name: "sensor-9", Cert: true})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(p.CertPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued cert does not verify against the site CA: %v", err)
	}
	if got := cert.Subject.CommonName; got != "sensor-9" {
		t.Fatalf("got CN %q, want sensor-9", got)
	}
	if e, ok := r.ByCN("sensor-9"); !ok || e.Addr.String() != "10.10.8.9" {
		t.Fatalf("ByCN: got %v %v, want 10.10.8.9", e.Addr, ok)
	}
	s := Snippet(p, SnippetParams{BridgeHost: "192.168.1.10", CoAPPort: 5684})
	for _, want := range []string{"FLEETGATE_DEVICE_KEY", "BEGIN EC PRIVATE KEY", `"10.10.8.9"`, "FLEETGATE_BRIDGE_PORT 5684"} {
		if !strings.Contains(s, want) {
			t.Fatalf("snippet lacks %q:\n%s", want, s)
		}
	}
	pp, err := Provision(r, nil, Request{Name: "sensor-10"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(pp.Endpoint.PSK); got != 32 {
		t.Fatalf("got PSK length %d, want 32", got)
	}
	s = Snippet(pp, SnippetParams{BridgeHost: "192.168.1.10", CoAPPort: 5684})
	if !strings.Contains(s, `FLEETGATE_PSK "`+string(pp.Endpoint.PSK)+`"`) || !strings.Contains(s, `FLEETGATE_PSK_IDENTITY "sensor-10"`) {
		t.Fatalf("PSK snippet lacks the defines:\n%s", s)
	}
}

func TestReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.json")
	r, err := Open(path, sitePrefix)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := r.Add(pskEP("sensor-17"))
	if _, err := r.Add(pskEP("sensor-18")); err != nil {
		t.Fatal(err)
	}
	// New key, identity and allow-list; the address stays.
	n := a
	n.PSKIdentity, n.PSK, n.Allow = "s17-v2", []byte("another key 0123"), []string{"10.20.0.0/16"}
	got, err := r.Replace(n)
	if err != nil || got.Addr != a.Addr || got.Allow[0] != "10.20.0.0/16" {
		t.Fatalf("Replace: %+v, %v", got, err)
	}
	if _, ok := r.PSK("sensor-17"); ok {
		t.Fatal("old identity still resolves")
	}
	if k, ok := r.PSK("s17-v2"); !ok || string(k) != "another key 0123" {
		t.Fatal("new identity does not resolve to the new key")
	}
	if SameCredentials(a, got) || !SameCredentials(got, got) {
		t.Fatal("SameCredentials")
	}
	// Persisted.
	r2, err := Open(path, sitePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := r2.ByName("sensor-17"); e.PSKIdentity != "s17-v2" || e.Addr != a.Addr {
		t.Fatalf("reopened: %+v", e)
	}
	// Refused: unknown name, address change, identity owned by another.
	bad := []Endpoint{pskEP("nobody"), func() Endpoint { e := got; e.Addr = netip.MustParseAddr("10.10.8.99"); return e }(),
		func() Endpoint { e := got; e.PSKIdentity = "sensor-18"; return e }()}
	for _, e := range bad {
		if _, err := r.Replace(e); err == nil {
			t.Errorf("Replace(%+v) accepted", e)
		}
	}
	if e, _ := r.ByName("sensor-17"); e.PSKIdentity != "s17-v2" {
		t.Fatalf("a refused Replace changed the endpoint: %+v", e)
	}
}
