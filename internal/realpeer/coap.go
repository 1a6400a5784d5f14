package realpeer

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// CoAPServerConfig configures StartCoAPServer (libcoap 4.3's example
// server: resources "/", "/time", "/async", "/example_data" (GET/PUT)).
type CoAPServerConfig struct {
	// Listen is the address (default 0.0.0.0 in a host, 127.0.0.1 in the
	// root namespace).
	Listen netip.Addr
	// Port is the plain CoAP port (default 5683 in a host, free in the
	// root namespace); DTLS is served on Port+1.
	Port int
	// PSK is the pre-shared key as text (libcoap's -k is not hex).
	PSK string
	// Backend is "openssl" (default) or "gnutls".
	Backend string
	// Extra are further coap-server flags.
	Extra []string
}

// CoAPServer is a running coap-server-<backend>.
type CoAPServer struct {
	// Addr is the plain CoAP address; DTLS is DTLSAddr (port + 1).
	Addr, DTLSAddr netip.AddrPort
	// Proc is the server process.
	Proc *netns.Proc
}

// StartCoAPServer starts libcoap's coap-server in h (nil: root namespace)
// and waits until its DTLS port is open.
func StartCoAPServer(t testing.TB, h *netns.Host, cfg CoAPServerConfig) *CoAPServer {
	t.Helper()
	if h != nil {
		testenv.RequireRoot(t) // on loopback in the root namespace any user can run it
	}
	if cfg.Backend == "" {
		cfg.Backend = "openssl"
	}
	bin := testenv.RequireBinary(t, "coap-server-"+cfg.Backend)
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.MustParseAddr("0.0.0.0")
		if h == nil {
			cfg.Listen = netip.MustParseAddr("127.0.0.1")
		}
	}
	if cfg.Port == 0 {
		cfg.Port = 5683
		if h == nil {
			cfg.Port = FreePort(t)
		}
	}
	args := []string{"-A", cfg.Listen.String(), "-p", fmt.Sprint(cfg.Port), "-v", "6"}
	if cfg.PSK != "" {
		args = append(args, "-k", cfg.PSK)
	}
	args = append(args, cfg.Extra...)
	s := &CoAPServer{
		Addr:     netip.AddrPortFrom(cfg.Listen, uint16(cfg.Port)),
		DTLSAddr: netip.AddrPortFrom(cfg.Listen, uint16(cfg.Port+1)),
		Proc:     netns.Start(t, h.Command(bin, args...)),
	}
	port := fmt.Sprintf(":%d ", cfg.Port+1)
	if !poll(5*time.Second, func() bool {
		out, _ := h.Command("ss", "-Hlun").Output()
		return containsAll(string(out), []string{port})
	}) {
		t.Fatalf("%v: coap-server did not open UDP %s:\n%s", ErrNotReady, port, s.Proc.Output())
	}
	return s
}

// CoAPRequest is one coap-client invocation.
type CoAPRequest struct {
	// Backend is "openssl" (default) or "gnutls".
	Backend string
	// Method is get (default), put, post or delete.
	Method string
	// URI is the full URI, e.g. "coaps://192.0.2.2:5684/time".
	URI string
	// Identity and PSK (text) for DTLS-PSK.
	Identity, PSK string
	// Payload is sent with -e when set.
	Payload string
	// Extra are further flags (-s observe seconds, -b block size, -c/-j/-C
	// certificates...).
	Extra []string
	// Timeout bounds the client (default 10 s; also passed as -B).
	Timeout time.Duration
}

// coapFailure matches what libcoap prints when something went wrong: a log
// line at WARN or worse (handshake failure, "cannot send CoAP pdu") or an
// error response code (4.xx, 5.xx).
var coapFailure = regexp.MustCompile(`(?m)^(\w{3} +\d+ [\d:.]+ (WARN|ERR|CRIT|ALRT|EMRG) |[45]\.\d\d\b)`)

// CoAPClient runs coap-client-<backend> from h (nil: root namespace) and
// returns its output (the response payload on success). libcoap's client
// exits 0 even when the DTLS handshake fails, so failure is judged by its
// output: the error wraps ErrDTLS and includes the output.
func CoAPClient(ctx context.Context, h *netns.Host, req CoAPRequest) (string, error) {
	if req.Backend == "" {
		req.Backend = "openssl"
	}
	if req.Method == "" {
		req.Method = "get"
	}
	if req.Timeout == 0 {
		req.Timeout = 10 * time.Second
	}
	args := []string{"-m", req.Method, "-B", fmt.Sprint(int(req.Timeout.Seconds()))}
	if req.PSK != "" {
		args = append(args, "-u", req.Identity, "-k", req.PSK)
	}
	if req.Payload != "" {
		args = append(args, "-e", req.Payload)
	}
	args = append(append(args, req.Extra...), req.URI)
	ctx, cancel := context.WithTimeout(ctx, req.Timeout+5*time.Second)
	defer cancel()
	out, err := h.CommandContext(ctx, "coap-client-"+req.Backend, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("realpeer: coap-client-%s: %w: %s", req.Backend, err, out)
	}
	if coapFailure.Match(out) {
		return string(out), fmt.Errorf("%w: %s", ErrDTLS, out)
	}
	return string(out), nil
}
