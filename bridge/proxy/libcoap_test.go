package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestLibcoapThroughBridge runs libcoap's coap-client as a real device with
// an ECDSA P-256 certificate from the site CA through the bridge's DTLS
// server to a CoAP service in central: observe (-s), and block-wise with
// 64-byte blocks (-b 64) for a 5000-byte GET and a 6000-byte POST. Verdicts
// are the client's output (it exits 0 even on failure) and what central saw.
func TestLibcoapThroughBridge(t *testing.T) {
	for _, backend := range []string{"openssl", "gnutls"} {
		t.Run(backend, func(t *testing.T) {
			testenv.RequireBinary(t, "coap-client-"+backend)
			dir := t.TempDir()
			ca, err := registry.LoadOrCreateCA(dir, "test")
			if err != nil {
				t.Fatal(err)
			}
			srvCert, err := ca.IssueTLS("bridge", 1, "bridge", "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			r := newRigWith(t, nil, func(c *coap.Config) { c.ClientCAs, c.Certificate = ca.Pool, &srvCert })
			pc, err := registry.Provision(r.reg, ca, registry.Request{Name: "sensor-9", Cert: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.px.AddEndpoint(pc.Endpoint); err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(pc.CertPEM, pc.KeyPEM); err != nil {
				t.Fatal(err)
			}
			write := func(name string, b []byte) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			}
			certArgs := []string{"-c", write("dev.pem", pc.CertPEM), "-j", write("dev.key", pc.KeyPEM), "-C", write("ca.pem", pc.CACertPEM)}
			cen := &observable{}
			r.goCentral(t, cen.handle)
			base := "coaps://" + r.srv.Addr().String()
			ctx := context.Background()

			// Observe for 3 s while central pushes two notifications.
			type result struct {
				out string
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := realpeer.CoAPClient(ctx, nil, realpeer.CoAPRequest{Backend: backend, URI: base + "/obs",
					Extra: append([]string{"-s", "3", "-w"}, certArgs...), Timeout: 8 * time.Second})
				done <- result{out, err}
			}()
			waitFor(t, func() bool { return r.px.Stats.ObservationsUp.Load() == 1 })
			cen.notify(t, 6, []byte("v1"))
			cen.notify(t, 7, []byte("v2"))
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			if !strings.Contains(res.out, "v0\nv1\nv2") {
				t.Fatalf("observe output %q, want v0 v1 v2", res.out)
			}
			// When -s ends, libcoap deregisters (Observe:1 GET or RST):
			// either way the upstream observation ends.
			waitFor(t, func() bool { _, up := r.px.Observations("sensor-9"); return up == 0 })
			waitFor(t, func() bool { _, dr, _ := cen.counts(); return dr == 1 })

			// Block-wise with 64-byte blocks; libcoap's debug log (-v 7)
			// shows the blocks on the wire: 5000 bytes end at block 78.
			out, err := realpeer.CoAPClient(ctx, nil, realpeer.CoAPRequest{Backend: backend, URI: base + "/big",
				Extra: append([]string{"-b", "64", "-v", "7", "-o", filepath.Join(dir, "get.out")}, certArgs...)})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "get.out")); !bytes.Equal(got, bigBody) {
				t.Fatalf("block-wise GET: got %d bytes, want the %d-byte body", len(got), len(bigBody))
			}
			if !strings.Contains(out, "Block2:78/_/64") {
				t.Fatalf("block-wise GET: no 64-byte block 78 in libcoap's log:\n%s", out)
			}
			upload := bytes.Repeat([]byte("0123456789"), 600)
			out, err = realpeer.CoAPClient(ctx, nil, realpeer.CoAPRequest{Backend: backend, Method: "post", URI: base + "/big",
				Extra: append([]string{"-b", "64", "-v", "7", "-f", write("up.bin", upload), "-o", filepath.Join(dir, "post.out")}, certArgs...)})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "post.out")); !bytes.Equal(got, upload) {
				t.Fatalf("block-wise POST: got %d bytes back, want the %d-byte echo", len(got), len(upload))
			}
			if !strings.Contains(out, "Block1:93/_/64") { // 6000 bytes: last 64-byte block
				t.Fatalf("block-wise POST: no 64-byte Block1 93 in libcoap's log")
			}
			if s := r.srv.Session("sensor-9"); s != nil && s.Endpoint.Name != "sensor-9" {
				t.Fatalf("session bound to %q", s.Endpoint.Name)
			}
		})
	}
}
