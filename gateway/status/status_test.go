package status

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() Report {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	return Report{Now: now, Started: now.Add(-26 * time.Hour), Engine: "running", Drops: map[string]uint64{"policy": 4, "malformed": 1}, Sessions: []Session{
		{ID: 1, Identity: "site-hall7", Outer: "198.51.100.7:4500", VPNAddr: "10.10.0.7", Routes: []string{"10.10.8.0/24"}, Suite: "aes128gcm16", MTU: 1400,
			RxBytes: 1536, TxBytes: 5 << 20, Since: now.Add(-90 * time.Minute)},
		{ID: 2, Identity: "ops", VPNAddr: "10.10.0.2", MTU: 1398, Since: now.Add(-5 * time.Second)},
	}}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"gateway up 1d2h0m0s, engine running, 2 session(s)", "IDENTITY", "site-hall7", "198.51.100.7:4500", "10.10.8.0/24", "aes128gcm16", "1.5 KiB", "5.0 MiB", "1h30m0s", "ops", "drops: malformed=1 policy=4"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestFetchHTTPAndUnix(t *testing.T) {
	h := Handler(sample)
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	r, err := Fetch(context.Background(), ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sessions) != 2 || r.Sessions[0].Identity != "site-hall7" {
		t.Errorf("http fetch: %+v", r)
	}
	sock := filepath.Join(t.TempDir(), "gw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	r, err = Fetch(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions[1].MTU != 1398 {
		t.Errorf("unix fetch: %+v", r)
	}
	if _, err := Fetch(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("fetch from a missing socket: got nil error")
	}
}

func TestTableBGP(t *testing.T) {
	r := sample()
	r.CRL = &CRL{URL: "https://ca.example/crl.pem", NextUpdate: r.Now.Add(time.Hour), Fetched: 3, Failed: 1, FailClosed: true}
	r.RADIUS = &RADIUS{Servers: map[string]bool{"10.20.0.5:1812": false, "10.20.0.6:1812": true}, SpoolQueued: 4, SpoolDelivered: 10, DAE: "0.0.0.0:3799"}
	r.BGP = &BGP{LocalAS: 65010, Announced: 3, Neighbors: []BGPNeighbor{
		{Addr: "198.51.100.1", AS: 65000, State: "established", Since: r.Now.Add(-5 * time.Minute)},
		{Addr: "198.51.100.2", AS: 65000, State: "active"}}}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"bgp: AS 65010, 3 prefix(es) announced, 1 of 2 neighbor(s) established", "198.51.100.1", "established", "5m0s", "198.51.100.2", "active",
		"crl: https://ca.example/crl.pem valid until 2026-11-23T13:00:00Z, FAIL-CLOSED: certificate logins refused (3 fetched, 1 failed)",
		"radius: 10.20.0.5:1812 dead, 10.20.0.6:1812 up; accounting spool 4 waiting, 10 delivered; disconnect/coa 0.0.0.0:3799"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
