package realpeer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestCoAPClientServerDTLSPSK: coap-client (OpenSSL and GnuTLS) against
// coap-server-openssl over DTLS-PSK across two hosts: the payload comes
// back; a wrong key is reported as ErrDTLS although the client exits 0.
func TestCoAPClientServerDTLSPSK(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")
	s := StartCoAPServer(t, b, CoAPServerConfig{PSK: "fleetgate-dev1-key"})
	uri := fmt.Sprintf("coaps://%s:%d/example_data", b.Addr, s.DTLSAddr.Port())
	for _, backend := range []string{"openssl", "gnutls"} {
		t.Run(backend, func(t *testing.T) {
			testenv.RequireBinary(t, "coap-client-"+backend)
			want := "reading from " + backend
			if _, err := CoAPClient(t.Context(), a, CoAPRequest{Backend: backend, Method: "put", URI: uri,
				Identity: "dev1", PSK: "fleetgate-dev1-key", Payload: want}); err != nil {
				t.Fatal(err)
			}
			got, err := CoAPClient(t.Context(), a, CoAPRequest{Backend: backend, URI: uri, Identity: "dev1", PSK: "fleetgate-dev1-key"})
			if err != nil || strings.TrimSpace(got) != want {
				t.Errorf("GET: got %q, %v; want %q", got, err, want)
			}
			out, err := CoAPClient(t.Context(), a, CoAPRequest{Backend: backend, URI: uri, Identity: "dev1", PSK: "wrong key", Timeout: 2 * time.Second})
			if !errors.Is(err, ErrDTLS) {
				t.Errorf("wrong key: got %v (output %q), want ErrDTLS", err, out)
			}
		})
	}
}
