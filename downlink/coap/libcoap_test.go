package coap_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestLibcoapClients runs libcoap's coap-client (OpenSSL and GnuTLS
// backends) with PSK against the DTLS listener, once with all suites and
// once with the server restricted to TLS_PSK_WITH_AES_128_CCM_8. coap-client
// exits 0 even when the handshake fails, so the verdict is its output.
func TestLibcoapClients(t *testing.T) {
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		for _, ccm8 := range []bool{false, true} {
			name := bin
			if ccm8 {
				name += "/ccm8-only"
			}
			t.Run(name, func(t *testing.T) {
				testenv.RequireBinary(t, bin)
				f := newFixture(t, func(c *coap.Config) {
					if ccm8 {
						c.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "-m", "get", "-B", "10", "-u", "sensor-17", "-k", string(f.key), "coaps://"+f.srv.Addr().String()+"/x")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s: %v\n%s", bin, err, out.String())
				}
				if got := out.String(); !strings.Contains(got, "hello sensor-17") {
					t.Fatalf("%s output: got %q, want it to contain %q", bin, got, "hello sensor-17")
				}
				// The handshake went through the stateless cookie exchange
				// (the guard's HelloVerifyRequest, then pion from the cookie
				// ClientHello on).
				if n := f.srv.Stats.HelloVerifySent.Load(); n == 0 {
					t.Fatalf("no HelloVerifyRequest sent")
				}
				s := f.srv.Session("sensor-17")
				if ccm8 && s != nil && s.Suite != dtls.TLS_PSK_WITH_AES_128_CCM_8 {
					t.Fatalf("got suite %v, want CCM_8", s.Suite)
				}
			})
		}
	}
}
